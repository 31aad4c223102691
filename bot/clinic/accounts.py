"""Staff accounts: argon2 password hashes, lock-out after repeated failures, roles, audit log.

argon2-cffi (the reference argon2 binding, argon2id with its default cost) hashes passwords.
An account locks for `LOCK_SECONDS` after `MAX_FAILURES` wrong passwords in a row; a wrong
username costs the same hashing time as a wrong password, so timing does not tell which.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.engine import Engine

from bot.clinic.schema import AUDIT, STAFF

ROLES = ("viewer", "admin")
MAX_FAILURES = 5
LOCK_SECONDS = 15 * 60
MIN_PASSWORD = 10
_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("not-a-real-password")


class AccountError(ValueError):
    pass


@dataclass(frozen=True)
class Staff:
    username: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def add_user(engine: Engine, username: str, password: str, role: str) -> None:
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    if not username or len(username) > 80 or not username.replace(".", "").replace("-", "").replace("_", "").isalnum():
        raise AccountError("username: letters, digits, '.', '-', '_' (at most 80)")
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"password: at least {MIN_PASSWORD} characters")
    with engine.begin() as conn:
        if conn.execute(sa.select(STAFF.c.id).where(STAFF.c.username == username)).first():
            raise AccountError(f"user {username} exists")
        conn.execute(
            sa.insert(STAFF).values(
                username=username, password_hash=_hasher.hash(password), role=role, failed_logins=0, created_at=time.time()
            )
        )


def set_password(engine: Engine, username: str, password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"password: at least {MIN_PASSWORD} characters")
    with engine.begin() as conn:
        done = conn.execute(
            sa.update(STAFF)
            .where(STAFF.c.username == username)
            .values(password_hash=_hasher.hash(password), failed_logins=0, locked_until=None)
        ).rowcount
    if not done:
        raise AccountError(f"no user {username}")


def unlock(engine: Engine, username: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.update(STAFF).where(STAFF.c.username == username).values(failed_logins=0, locked_until=None))


def list_users(engine: Engine) -> list[tuple[str, str, bool]]:
    now = time.time()
    with engine.connect() as conn:
        rows = conn.execute(sa.select(STAFF.c.username, STAFF.c.role, STAFF.c.locked_until).order_by(STAFF.c.username)).all()
    return [(r.username, r.role, bool(r.locked_until and r.locked_until > now)) for r in rows]


def authenticate(engine: Engine, username: str, password: str, now: float | None = None) -> tuple[Staff | None, str]:
    """(staff, "") on success, else (None, reason) with reason "locked" or "invalid"."""
    now = now or time.time()
    with engine.begin() as conn:
        row = conn.execute(sa.select(STAFF).where(STAFF.c.username == username)).mappings().first()
        if row is None:
            _verify(_DUMMY_HASH, password)
            return None, "invalid"
        if row["locked_until"] and row["locked_until"] > now:
            return None, "locked"
        if _verify(row["password_hash"], password):
            conn.execute(sa.update(STAFF).where(STAFF.c.id == row["id"]).values(failed_logins=0, locked_until=None))
            if _hasher.check_needs_rehash(row["password_hash"]):
                conn.execute(sa.update(STAFF).where(STAFF.c.id == row["id"]).values(password_hash=_hasher.hash(password)))
            return Staff(row["username"], row["role"]), ""
        failures = (row["failed_logins"] or 0) + 1
        locked = now + LOCK_SECONDS if failures >= MAX_FAILURES else None
        conn.execute(sa.update(STAFF).where(STAFF.c.id == row["id"]).values(failed_logins=failures, locked_until=locked))
        return None, "locked" if locked else "invalid"


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def audit(engine: Engine, username: str, action: str, target: str = "", detail: str = "") -> None:
    """Who did what to which conversation/export, when. Never message content."""
    with engine.begin() as conn:
        conn.execute(sa.insert(AUDIT).values(at=time.time(), username=username, action=action, target=target[:255], detail=detail[:1000]))


def audit_entries(engine: Engine, limit: int = 200, offset: int = 0) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(AUDIT).order_by(AUDIT.c.id.desc()).limit(limit).offset(offset)).mappings().all()
    return [dict(r) for r in rows]
