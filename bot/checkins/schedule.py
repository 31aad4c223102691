"""When an enrolled patient's check-ins are due: data/checkins.yml applied to one enrolment.

Pure functions of the enrolment (therapy kind, infusion date, time zone) and a time window, so
a test can walk 28 simulated days in a moment and the scheduler can ask "what fell due since I
last looked" after a restart. Times are local wall-clock times in the enrolment's zone (a
check-in at 08:00 stays at 08:00 across a daylight-saving change); one that falls in quiet
hours moves to their end.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml

from bot import PROJECT_ROOT

DEFAULT_PATH = PROJECT_ROOT / "data" / "checkins.yml"
CONFIG_ENV = "CRS_CHECKINS"
LEVELS = ("monitor", "urgent", "emergency")


class CheckinConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Window:
    """Days [first, last] after the infusion with their check-in times."""

    first_day: int
    last_day: int
    times: tuple[time, ...]
    missed_level: str
    neuro_times: frozenset[time] = frozenset()


@dataclass(frozen=True)
class CheckinConfig:
    quiet_start: time
    quiet_end: time
    remind_after_s: float
    missed_after_s: float
    stale_after_s: float
    schedules: dict[str, tuple[Window, ...]]
    texts: tuple[tuple[str, str], ...] = ()  # what the patient reads (scheduler.Texts)
    tick_s: float = 30.0  # how often the relay looks for check-ins that fell due
    send_rate_share: float = 0.5  # of TELEGRAM_SEND_RATE: the rest stays for patients' replies
    emergency_screen: tuple[str, ...] = ()  # symptom ids the check-in's yes/no question asks about
    clear_yes: frozenset[str] = frozenset()  # typed answers that mean yes to it (see is_clear_yes)
    question_open_s: float = 7200.0  # how long after a check-in a yes/no still answers its question

    def is_clear_yes(self, text: str) -> bool:
        """A typed "yes" to the check-in's question (a button's "/affirm" always is)."""
        if text.strip().startswith("/"):
            return True
        words = "".join(c if c.isalnum() or c.isspace() else " " for c in text.lower()).split()
        return " ".join(words) in self.clear_yes

    def in_quiet_hours(self, t: time) -> bool:
        if self.quiet_start <= self.quiet_end:
            return self.quiet_start <= t < self.quiet_end
        return t >= self.quiet_start or t < self.quiet_end  # across midnight (22:00–07:30)

    @property
    def last_day(self) -> int:
        return max((w.last_day for windows in self.schedules.values() for w in windows), default=0)


@dataclass(frozen=True)
class Due:
    """One check-in of one enrolment."""

    code: str
    at: float  # unix time it is due
    local: datetime  # when, in the enrolment's zone (after any quiet-hours move)
    day: int  # days after the infusion
    missed_level: str
    neuro: bool  # offer the caregiver neuro check

    @property
    def key(self) -> str:
        """Stable across restarts and replicas: what the database claims once."""
        return f"{self.code}@{self.local.strftime('%Y-%m-%dT%H:%M' + (':%S' if self.local.second else ''))}"


def _time(value: object, where: str) -> time:
    try:
        return time.fromisoformat(str(value))
    except ValueError as exc:
        raise CheckinConfigError(f"{where}: {value!r} is not a time like 08:00") from exc


def load_checkin_config(path: Path | None = None) -> CheckinConfig:
    """data/checkins.yml (or $CRS_CHECKINS), checked: a clinic's typo fails at start, loudly."""
    return _load(path or Path(os.environ.get(CONFIG_ENV) or DEFAULT_PATH))


@lru_cache(maxsize=4)
def _load(path: Path) -> CheckinConfig:
    raw = yaml.safe_load(path.read_text())
    quiet = raw.get("quiet_hours") or {}
    schedules: dict[str, tuple[Window, ...]] = {}
    for kind, windows in (raw.get("schedules") or {}).items():
        parsed = []
        for n, w in enumerate(windows):
            where = f"{path.name}: schedules.{kind}[{n}]"
            first, last = (int(d) for d in w["days"])
            if not 0 <= first <= last:
                raise CheckinConfigError(f"{where}: days must be [first, last] with 0 <= first <= last")
            if w.get("missed_level") not in LEVELS:
                raise CheckinConfigError(f"{where}: missed_level must be one of {', '.join(LEVELS)}")
            times = tuple(sorted(_time(t, where) for t in w["times"]))
            neuro = frozenset(_time(t, where) for t in w.get("neuro_check") or ())
            if not neuro <= set(times):
                raise CheckinConfigError(f"{where}: neuro_check times must be among its times")
            parsed.append(Window(first, last, times, w["missed_level"], neuro))
        schedules[str(kind)] = tuple(parsed)
    return CheckinConfig(
        quiet_start=_time(quiet.get("start", "22:00"), "quiet_hours.start"),
        quiet_end=_time(quiet.get("end", "07:00"), "quiet_hours.end"),
        remind_after_s=float(raw.get("remind_after_min", 60)) * 60,
        missed_after_s=float(raw.get("missed_after_min", 120)) * 60,
        stale_after_s=float(raw.get("stale_after_min", 90)) * 60,
        schedules=schedules,
        texts=tuple((str(k), str(v)) for k, v in (raw.get("texts") or {}).items()),
        tick_s=float(raw.get("tick_s", 30)),
        send_rate_share=float(raw.get("send_rate_share", 0.5)),
        emergency_screen=_symptom_ids(raw.get("emergency_screen"), path),
        clear_yes=_clear_yes(raw.get("clear_yes"), path),
        question_open_s=float(raw.get("question_open_min", raw.get("missed_after_min", 120))) * 60,
    )


def _clear_yes(values: list[object] | None, path: Path) -> frozenset[str]:
    if any(isinstance(v, bool) for v in values or ()):
        raise CheckinConfigError(f'{path.name}: clear_yes: quote each answer ("yes"): YAML reads a bare yes as true')
    return frozenset(" ".join(str(w).lower().split()) for w in values or ["yes", "yeah", "yep", "y"])


def _symptom_ids(values: list[object] | None, path: Path) -> tuple[str, ...]:
    """The emergency screen's symptom ids; without a list, every emergency-class symptom."""
    from bot.clinical.knowledge import load_knowledge_base

    kb = load_knowledge_base()
    if values is None:
        return tuple(s for s in kb.symptoms if kb.symptom_class(s) == "emergency")
    unknown = [str(v) for v in values if str(v) not in kb.symptoms]
    if unknown or not values:
        raise CheckinConfigError(f"{path.name}: emergency_screen needs symptom ids of data/clinical.yml (unknown: {', '.join(unknown)})")
    return tuple(str(v) for v in values)


def _moved_out_of_quiet_hours(config: CheckinConfig, local: datetime) -> datetime:
    if not config.in_quiet_hours(local.timetz().replace(tzinfo=None)):
        return local
    end = datetime.combine(local.date(), config.quiet_end, tzinfo=local.tzinfo)
    return end if end > local else end + timedelta(days=1)


def due_between(config: CheckinConfig, code: str, kind: str, infusion: date, zone: ZoneInfo, start: float, end: float) -> list[Due]:
    """Every check-in of this enrolment due in [start, end), oldest first."""
    found: dict[str, Due] = {}
    for window in config.schedules.get(kind, ()):
        for day in range(window.first_day, window.last_day + 1):
            for t in window.times:
                local = _moved_out_of_quiet_hours(config, datetime.combine(infusion + timedelta(days=day), t, tzinfo=zone))
                at = local.timestamp()
                if start <= at < end:
                    due = Due(code, at, local, day, window.missed_level, t in window.neuro_times)
                    found.setdefault(due.key, due)  # two times moved to the same minute: one check-in
    return sorted(found.values(), key=lambda d: d.at)


def dose_anchors(infusion_date: str | None, later_doses: str | None) -> list[date]:
    """The dates schedules count days from, as an enrolment stores them: the infusion (first dose)
    and the later step-up doses, comma-separated ISO dates. ValueError on a malformed one."""
    values = [infusion_date or "", *(later_doses or "").split(",")]
    return sorted({date.fromisoformat(v) for v in values if v})


def due_for(config: CheckinConfig, code: str, kind: str, anchors: list[date], zone: ZoneInfo, start: float, end: float) -> list[Due]:
    """`due_between` from each dose (the infusion, then a bispecific's step-up doses): a day
    follows the schedule of the latest dose on or before it, so its check-ins and day count
    never mix two doses' windows."""
    doses = sorted(set(anchors))
    found: list[Due] = []
    for n, dose in enumerate(doses):
        until = doses[n + 1] if n + 1 < len(doses) else None
        found += [d for d in due_between(config, code, kind, dose, zone, start, end) if until is None or d.local.date() < until]
    return sorted(found, key=lambda d: d.at)
