"""Staff accounts: argon2 password hashes, lock-out after repeated failures, roles, audit log,
and server-side sessions that logging out, disabling an account or a new password end at once.

argon2-cffi (the reference argon2 binding, argon2id with its default cost) hashes passwords.
An account locks for `LOCK_SECONDS` after `MAX_FAILURES` wrong passwords in a row; a wrong
username costs the same hashing time as a wrong password, so timing does not tell which.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.engine import Engine

from bot.clinic.schema import AUDIT, SESSIONS, STAFF

ROLES = ("viewer", "admin")
MAX_FAILURES = 5
LOCK_SECONDS = 15 * 60
MIN_PASSWORD = 10
SESSION_SECONDS = 8 * 3600
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
    """A new password ends every session of the account (whoever knew the old one is out)."""
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"password: at least {MIN_PASSWORD} characters")
    with engine.begin() as conn:
        done = conn.execute(
            sa.update(STAFF)
            .where(STAFF.c.username == username)
            .values(password_hash=_hasher.hash(password), failed_logins=0, locked_until=None)
        ).rowcount
        if done:
            _end_sessions(conn, username)
    if not done:
        raise AccountError(f"no user {username}")


def change_own_password(engine: Engine, username: str, current: str, new: str) -> None:
    """A signed-in user's change: the current password first (a left-open browser is not enough)."""
    staff, _ = authenticate(engine, username, current)
    if staff is None:
        raise AccountError("The current password is wrong.")
    if new == current:
        raise AccountError("The new password must differ from the current one.")
    set_password(engine, username, new)


def set_disabled(engine: Engine, username: str, disabled: bool) -> None:
    """Disabling an account refuses its logins and ends its sessions at once."""
    with engine.begin() as conn:
        done = conn.execute(sa.update(STAFF).where(STAFF.c.username == username).values(disabled=disabled)).rowcount
        if done and disabled:
            _end_sessions(conn, username)
    if not done:
        raise AccountError(f"no user {username}")


# ---------------------------------------------------------------------- sessions
def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def start_session(engine: Engine, username: str, now: float | None = None) -> str:
    """A new session id for the browser's signed cookie; only its hash is stored."""
    now = now or time.time()
    session_id = secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(sa.delete(SESSIONS).where(SESSIONS.c.expires_at < now - 86400))  # keep the table small
        conn.execute(
            sa.insert(SESSIONS).values(id_hash=_hash(session_id), username=username, created_at=now, expires_at=now + SESSION_SECONDS)
        )
    return session_id


def session_staff(engine: Engine, session_id: str | None, now: float | None = None) -> Staff | None:
    """The account a session belongs to, if the session is live and the account enabled (its
    role as it is now: a changed role applies at the next request)."""
    if not session_id or not isinstance(session_id, str):
        return None
    now = now or time.time()
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(STAFF.c.username, STAFF.c.role)
            .select_from(SESSIONS.join(STAFF, STAFF.c.username == SESSIONS.c.username))
            .where(
                SESSIONS.c.id_hash == _hash(session_id), SESSIONS.c.revoked_at.is_(None), SESSIONS.c.expires_at > now,
                STAFF.c.disabled.is_(sa.false()),
            )
        ).first()  # fmt: skip
    return Staff(row.username, row.role) if row else None


def end_sessions(engine: Engine, username: str, keep: str | None = None) -> int:
    """End every live session of `username` (but `keep`, the caller's own); returns how many."""
    with engine.begin() as conn:
        return _end_sessions(conn, username, keep)


def _end_sessions(conn: sa.engine.Connection, username: str, keep: str | None = None) -> int:
    condition = [SESSIONS.c.username == username, SESSIONS.c.revoked_at.is_(None)]
    if keep:
        condition.append(SESSIONS.c.id_hash != _hash(keep))
    return int(conn.execute(sa.update(SESSIONS).where(*condition).values(revoked_at=time.time())).rowcount)


def unlock(engine: Engine, username: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.update(STAFF).where(STAFF.c.username == username).values(failed_logins=0, locked_until=None))


def list_users(engine: Engine) -> list[tuple[str, str, str]]:
    """(username, role, state) with state "", "LOCKED" or "DISABLED"."""
    now = time.time()
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(STAFF.c.username, STAFF.c.role, STAFF.c.locked_until, STAFF.c.disabled).order_by(STAFF.c.username)
        ).all()
    return [(r.username, r.role, "DISABLED" if r.disabled else "LOCKED" if r.locked_until and r.locked_until > now else "") for r in rows]


def authenticate(engine: Engine, username: str, password: str, now: float | None = None) -> tuple[Staff | None, str]:
    """(staff, "") on success, else (None, reason) with reason "locked" or "invalid" (also for a
    disabled account)."""
    now = now or time.time()
    with engine.begin() as conn:
        row = conn.execute(sa.select(STAFF).where(STAFF.c.username == username)).mappings().first()
        if row is None:
            _verify(_DUMMY_HASH, password)
            return None, "invalid"
        if row["disabled"]:
            _verify(_DUMMY_HASH, password)
            return None, "invalid"  # said like a wrong password: a guesser learns nothing
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
