"""What the clinic reads: conversation summaries (kept incrementally), transcripts and trends.

`refresh` folds events added since the last run (Rasa's `events.id` only grows) into one
summary row per conversation, and returns the conversations that reached a new level, which is
what alerts are raised from. A list page then reads one indexed table, whatever the number of
events.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from bot.checkins.neuro import reported_entities
from bot.checkins.store import CHECKINS
from bot.clinic.schema import ENROLMENTS, EVENTS, STATE, SUMMARIES
from bot.clinic.worklist import Episodes, Tracking
from bot.clinical.knowledge import LEVEL_RANK, load_knowledge_base

log = logging.getLogger("bot.clinic")
LEVELS_BY_SEVERITY = sorted(LEVEL_RANK, key=LEVEL_RANK.get, reverse=True)  # emergency first
BATCH = 5000
PAGE_SIZE = 50
# Set to "test" in a user message's metadata by an authenticated caller (bot/rasa_plugins/channels.py): the
# conversation is evaluation or benchmark traffic, hidden from the clinic and never alerted.
TRAFFIC_KEY = "traffic"


def pseudonym(sender_id: str) -> str:
    """How an unlinked conversation is shown: stable, short, not the channel's id."""
    return "P-" + hashlib.sha256(sender_id.encode()).hexdigest()[:8]


def symptom_label(symptom_id: str) -> str:
    kb = load_knowledge_base()
    symptom = kb.symptoms.get(symptom_id)
    return symptom.label if symptom is not None else symptom_id


@dataclass
class _Summary:
    sender_id: str
    enrolment_code: str | None = None
    first_at: float | None = None
    last_at: float | None = None
    level_rank: int = 0
    level: str = "none"
    symptoms: str = ""
    therapy: str = ""
    messages: int = 0
    test: bool = False
    new: bool = True

    def row(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "new"}


class _Overtaken(Exception):
    """Another clinic instance folded this batch first: roll back ours."""


# An event id missing from the sequence is usually a transaction still committing (two Rasa
# replicas on PostgreSQL commit out of id order): wait for it this long before skipping it,
# or an emergency inserted just below the mark would never be indexed nor alerted.
GAP_WAIT_S = 10.0
_gaps: dict[int, float] = {}  # first missing id → when it was first seen missing (this process)


def _contiguous(rows: list[Any], mark: int, now: float) -> list[Any]:
    """The rows up to the first id gap that is younger than GAP_WAIT_S."""
    usable, expected = [], mark + 1
    for r in rows:
        if r.id != expected and now - _gaps.setdefault(expected, now) < GAP_WAIT_S:
            break
        usable.append(r)
        expected = r.id + 1
    for missing in [k for k in _gaps if k <= mark]:
        del _gaps[missing]
    return usable


def refresh(engine: Engine, tracking: Tracking | None = None) -> list[tuple[str, str]]:
    """Fold new events into the summaries and, with `tracking`, open and raise worklist items
    and queue their alerts in the same transaction; returns (sender_id, level) for each new
    highest level a conversation reached.

    Several clinic instances may run this at once: the mark moves only from the value this
    transaction read, so a batch another instance folded first is rolled back here, never
    folded twice (no second item, no second alert)."""
    reached: list[tuple[str, str]] = []
    while True:
        try:
            with engine.begin() as conn:
                mark = int(conn.execute(sa.select(STATE.c.value).where(STATE.c.key == "events_id")).scalar() or 0)
                rows = conn.execute(
                    sa.select(EVENTS.c.id, EVENTS.c.sender_id, EVENTS.c.type_name, EVENTS.c.timestamp, EVENTS.c.data)
                    .where(EVENTS.c.id > mark)
                    .order_by(EVENTS.c.id)
                    .limit(BATCH)
                ).all()
                usable = _contiguous(rows, mark, time.monotonic())
                if not usable:
                    return reached
                found = _fold(conn, usable, tracking)
                last = usable[-1].id
                if mark:
                    moved = conn.execute(
                        sa.update(STATE).where(STATE.c.key == "events_id", STATE.c.value == mark).values(value=last)
                    ).rowcount  # fmt: skip
                    if moved != 1:
                        raise _Overtaken
                else:
                    conn.execute(sa.insert(STATE).values(key="events_id", value=last))  # a second instance's insert fails
        except _Overtaken:
            return reached
        except sa.exc.IntegrityError:
            return reached  # both instances' first run: the other one inserted the mark
        reached += found
        if len(usable) < BATCH:
            return reached


def _fold(conn: Connection, rows: list[Any], tracking: Tracking | None = None) -> list[tuple[str, str]]:
    senders = {r.sender_id for r in rows}
    summaries: dict[str, _Summary] = {}
    for row in conn.execute(sa.select(SUMMARIES).where(SUMMARIES.c.sender_id.in_(senders))).mappings():
        summaries[row["sender_id"]] = _Summary(**dict(row), new=False)
    episodes = Episodes(conn, tracking, senders) if tracking and tracking.levels else None
    current: dict[str, str] = {}  # the level each conversation is at now, as far as this batch tells
    reached = []
    for r in rows:
        try:
            _fold_one(r, summaries, episodes, current, reached)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            # one malformed event must not stop the indexing (and every alert after it)
            log.error("clinic.refresh.bad_event id=%s type=%s error=%s", r.id, r.type_name, type(exc).__name__)
    for s in summaries.values():
        if s.new:
            conn.execute(sa.insert(SUMMARIES).values(**s.row()))
        else:
            conn.execute(sa.update(SUMMARIES).where(SUMMARIES.c.sender_id == s.sender_id).values(**s.row()))
    return reached


def _fold_one(
    r: Any, summaries: dict[str, _Summary], episodes: Episodes | None, current: dict[str, str], reached: list[tuple[str, str]]
) -> None:
    """One event into its conversation's summary (and worklist item)."""
    s = summaries.setdefault(r.sender_id, _Summary(r.sender_id))
    if r.timestamp is not None:
        s.first_at = r.timestamp if s.first_at is None else min(s.first_at, r.timestamp)
        s.last_at = r.timestamp if s.last_at is None else max(s.last_at, r.timestamp)
    data = _json(r.data)
    at = r.timestamp or time.time()
    if r.type_name == "user":
        s.messages += 1
        metadata = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
        telegram = metadata.get("telegram") if isinstance(metadata.get("telegram"), dict) else {}
        if telegram.get("enrolment_code"):
            s.enrolment_code = str(telegram["enrolment_code"]).strip().upper()[:64]
        if metadata.get(TRAFFIC_KEY) == "test":
            s.test = True  # once test, always: one tagged message marks the whole conversation
        if episodes and not s.test:
            # "I still can't breathe" after the item was closed: same reasons, so no slot
            # changes; the present emergency in the message itself reopens the worklist
            entities = (data.get("parse_data") or {}).get("entities") or []
            said = [(str(e.get("value")), str(e.get("text") or "")) for e in entities if isinstance(e, dict) and _present_symptom(e)]
            if said:
                episodes.reported(r.sender_id, said, str(data.get("text") or ""), at)
    elif r.type_name == "slot":
        name, value = data.get("name"), data.get("value")
        if name == "triage_level" and value in LEVEL_RANK:
            current[r.sender_id] = value
            if episodes and not s.test:
                episodes.level(r.sender_id, value, at)
            if LEVEL_RANK[value] > s.level_rank:
                s.level_rank, s.level = LEVEL_RANK[value], value
                reached.append((r.sender_id, value))
        elif name == "triage_reasons" and episodes and not s.test and isinstance(value, list):
            episodes.reasons(r.sender_id, [str(v) for v in value], current.get(r.sender_id, s.level), at)
        elif name == "symptoms":
            s.symptoms = " ".join(str(v) for v in value or [])
        elif name == "therapy":
            s.therapy = str(value or "")[:120]


def _present_symptom(entity: dict[str, Any]) -> bool:
    return entity.get("entity") == "symptom" and entity.get("role") == "present"


def _json(data: str | None) -> dict[str, Any]:
    try:
        value = json.loads(data or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# ---------------------------------------------------------------------- list
@dataclass(frozen=True)
class Filters:
    level: str = ""
    date_from: date | None = None
    date_to: date | None = None
    symptom: str = ""
    therapy: str = ""
    page: int = 1
    traffic: str = ""  # "" patients only, "test" evaluation/benchmark traffic only, "all" both

    @classmethod
    def parse(cls, params: Any) -> Filters:
        def day(name: str) -> date | None:
            try:
                return date.fromisoformat(params.get(name, ""))
            except ValueError:
                return None

        level = params.get("level", "")
        try:
            page = max(1, int(params.get("page", "1")))
        except ValueError:
            page = 1
        return cls(
            level=level if level in LEVEL_RANK else "",
            date_from=day("from"),
            date_to=day("to"),
            symptom=params.get("symptom", "")[:60],
            therapy=params.get("therapy", "")[:60],
            page=page,
            traffic=params.get("traffic", "") if params.get("traffic", "") in ("test", "all") else "",
        )

    def query(self, page: int | None = None) -> dict[str, str]:
        """These filters as URL parameters (for paging and export links)."""
        values = {
            "level": self.level,
            "from": self.date_from.isoformat() if self.date_from else "",
            "to": self.date_to.isoformat() if self.date_to else "",
            "symptom": self.symptom,
            "therapy": self.therapy,
            "page": str(page) if page and page > 1 else "",
            "traffic": self.traffic,
        }
        return {k: v for k, v in values.items() if v}

    def where(self) -> list[Any]:
        conditions: list[Any] = []
        if self.traffic != "all":
            conditions.append(SUMMARIES.c.test.is_(sa.true() if self.traffic == "test" else sa.false()))
        if self.level:
            conditions.append(SUMMARIES.c.level == self.level)
        if self.date_from:
            conditions.append(SUMMARIES.c.last_at >= utc_midnight(self.date_from))
        if self.date_to:
            conditions.append(SUMMARIES.c.first_at < utc_midnight(self.date_to) + 86400)
        if self.symptom:
            padded = sa.literal(" ") + SUMMARIES.c.symptoms + sa.literal(" ")
            conditions.append(padded.contains(f" {self.symptom} ", autoescape=True))
        if self.therapy:
            conditions.append(
                sa.or_(
                    sa.func.lower(SUMMARIES.c.therapy).contains(self.therapy.lower(), autoescape=True),
                    sa.func.lower(ENROLMENTS.c.therapy).contains(self.therapy.lower(), autoescape=True),
                )
            )
        return conditions


def utc_midnight(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


@dataclass
class Row:
    sender_id: str
    patient: str
    linked: bool
    therapy: str
    first_at: float | None
    last_at: float | None
    level: str
    symptoms: list[str]
    messages: int


def therapy_name(therapy_id: str | None) -> str:
    """Enrolments store the knowledge-base therapy id; people read its name."""
    therapy = load_knowledge_base().therapy(therapy_id) if therapy_id else None
    return therapy.name if therapy else (therapy_id or "")


def _rows(result: Any) -> list[Row]:
    return [
        Row(
            sender_id=r.sender_id,
            patient=r.label or pseudonym(r.sender_id),
            linked=r.label is not None,
            therapy=therapy_name(r.enrolled_therapy) or r.therapy or "",
            first_at=r.first_at,
            last_at=r.last_at,
            level=r.level,
            symptoms=r.symptoms.split() if r.symptoms else [],
            messages=r.messages,
        )
        for r in result
    ]


def _list_query(filters: Filters) -> Any:
    joined = SUMMARIES.outerjoin(ENROLMENTS, ENROLMENTS.c.code == SUMMARIES.c.enrolment_code)
    return (
        sa.select(SUMMARIES, ENROLMENTS.c.label, ENROLMENTS.c.therapy.label("enrolled_therapy"))
        .select_from(joined)
        .where(*filters.where())
        .order_by(SUMMARIES.c.level_rank.desc(), SUMMARIES.c.last_at.desc(), SUMMARIES.c.sender_id)
    )


def list_conversations(engine: Engine, filters: Filters, page_size: int = PAGE_SIZE) -> tuple[list[Row], int]:
    """One page of conversations, emergency first then most recent; and the total count."""
    joined = SUMMARIES.outerjoin(ENROLMENTS, ENROLMENTS.c.code == SUMMARIES.c.enrolment_code)
    with engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(joined).where(*filters.where())).scalar_one()
        result = conn.execute(_list_query(filters).limit(page_size).offset((filters.page - 1) * page_size))
        return _rows(result), int(total)


def iter_conversations(engine: Engine, filters: Filters, chunk: int = 2000) -> Any:
    """Every conversation matching the filters (for exports), streamed in chunks."""
    offset = 0
    while True:
        with engine.connect() as conn:
            rows = _rows(conn.execute(_list_query(filters).limit(chunk).offset(offset)))
        yield from rows
        if len(rows) < chunk:
            return
        offset += chunk


def level_counts(engine: Engine, now: float | None = None) -> dict[str, dict[str, int]]:
    """Conversations per highest level, active today (UTC) and in the last 7 days."""
    now = now or time.time()
    today = utc_midnight(datetime.fromtimestamp(now, UTC).date())
    counts: dict[str, dict[str, int]] = {}
    with engine.connect() as conn:
        for name, since in (("today", today), ("week", today - 6 * 86400)):
            result = conn.execute(
                sa.select(SUMMARIES.c.level, sa.func.count())
                .where(SUMMARIES.c.last_at >= since, SUMMARIES.c.test.is_(sa.false()))
                .group_by(SUMMARIES.c.level)
            )
            found = dict(result.all())
            counts[name] = {level: int(found.get(level, 0)) for level in LEVELS_BY_SEVERITY}
    return counts


# ---------------------------------------------------------------------- one conversation
@dataclass
class Turn:
    at: float | None
    who: str  # patient | bot
    text: str
    present: list[str] = field(default_factory=list)
    denied: list[str] = field(default_factory=list)
    hypothetical: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # escalations decided after this message
    level: str | None = None
    # Readings the patient gave in this message (bot/nlu/vitals.py via the `vital` entity): dicts with
    # kind (temperature | pulse | blood_pressure | spo2), value (as written: °C or °F for a temperature,
    # systolic for blood pressure), unit (C | F | /min | mmHg | %), value_c (temperature in °C),
    # diastolic (blood pressure, or None) and text (the patient's words).
    vitals: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Conversation:
    sender_id: str
    patient: str
    linked: bool
    therapy: str
    infusion_date: str | None
    level: str
    turns: list[Turn]
    symptoms: list[str]
    denied: list[str]
    therapy_id: str = ""  # the knowledge-base therapy id (enrolment, else the `therapy` slot), "" if none
    enrolment_code: str = ""  # the clinic's code for an enrolled patient (unique, unlike the label), else ""


def load_conversation(engine: Engine, sender_id: str) -> Conversation | None:
    with engine.connect() as conn:
        summary = conn.execute(
            sa.select(SUMMARIES, ENROLMENTS.c.label, ENROLMENTS.c.therapy.label("enrolled_therapy"), ENROLMENTS.c.infusion_date)
            .select_from(SUMMARIES.outerjoin(ENROLMENTS, ENROLMENTS.c.code == SUMMARIES.c.enrolment_code))
            .where(SUMMARIES.c.sender_id == sender_id)
        ).first()
        if summary is None:
            return None
        events = conn.execute(
            sa.select(EVENTS.c.type_name, EVENTS.c.timestamp, EVENTS.c.data).where(EVENTS.c.sender_id == sender_id).order_by(EVENTS.c.id)
        ).all()
        checkins = _checkin_turns(conn, sender_id)
    turns: list[Turn] = []
    shown_reasons: set[str] = set()
    slots: dict[str, Any] = {}
    last_patient: Turn | None = None
    for e in events:
        data = _json(e.data)
        if e.type_name == "user":
            turn = Turn(e.timestamp, "patient", str(data.get("text") or ""))
            reported = reported_entities(data.get("metadata"))  # a caregiver's neuro check, not typed words
            button = ((data.get("metadata") or {}).get("telegram") or {}).get("button")
            if reported:
                turn.text = "[caregiver neuro check] " + "; ".join(str(r["evidence"]) for r in reported)
            elif button and turn.text.startswith("/"):  # a tapped button's payload: show what the patient saw
                turn.text = f"[tapped: {button}]"
            for entity in [*((data.get("parse_data") or {}).get("entities") or []), *reported]:
                # a reading of the patient now: not "what if it hits 104F", not someone else's, not an old one
                if entity.get("entity") == "vital" and entity.get("role", "measured") == "measured":
                    turn.vitals.append(vital_reading(entity))
                elif entity.get("entity") == "symptom":
                    role = entity.get("role")
                    target = {"present": turn.present, "absent": turn.denied, "hypothetical": turn.hypothetical}.get(role)
                    if target is not None and entity.get("value") not in target:
                        target.append(str(entity.get("value")))
            turns.append(turn)
            last_patient = turn
        elif e.type_name == "bot":
            turns.append(Turn(e.timestamp, "bot", str(data.get("text") or "")))
        elif e.type_name == "slot":
            slots[data.get("name")] = data.get("value")
            if data.get("name") == "triage_reasons" and last_patient is not None:
                for reason in data.get("value") or []:
                    if reason not in shown_reasons:
                        shown_reasons.add(reason)
                        last_patient.reasons.append(str(reason))
            elif data.get("name") == "triage_level" and last_patient is not None:
                last_patient.level = data.get("value")
        elif e.type_name == "restart":
            shown_reasons.clear()
            slots.clear()
    if checkins:  # the assistant wrote first: in the transcript where it happened (a stable sort keeps each turn's order)
        turns = sorted(turns + checkins, key=lambda t: t.at or 0.0)
    return Conversation(
        sender_id=sender_id,
        patient=summary.label or pseudonym(sender_id),
        linked=summary.label is not None,
        therapy=therapy_name(summary.enrolled_therapy) or summary.therapy or "",
        infusion_date=summary.infusion_date,
        level=summary.level,
        turns=turns,
        symptoms=list(slots.get("symptoms") or []),
        denied=list(slots.get("denied_symptoms") or []),
        therapy_id=summary.enrolled_therapy or str(slots.get("therapy") or ""),
        enrolment_code=summary.enrolment_code or "" if summary.label is not None else "",
    )


def _checkin_turns(conn: Connection, sender_id: str) -> list[Turn]:
    """The scheduled check-ins (bot/checkins) sent to this chat: they are not Rasa events, but a
    reviewer must see what the patient was asked before a "yes"."""
    if not sa.inspect(conn).has_table(CHECKINS.name):
        return []
    rows = conn.execute(
        sa.select(CHECKINS.c.sent_at, CHECKINS.c.day, CHECKINS.c.status, CHECKINS.c.reminded_at)
        .where(CHECKINS.c.sender_id == sender_id, CHECKINS.c.sent_at.is_not(None))
        .order_by(CHECKINS.c.sent_at)
    ).all()  # fmt: skip
    turns = []
    for row in rows:
        turns.append(
            Turn(row.sent_at, "bot", f"[check-in sent, day {row.day}: temperature, and the emergency signs as one yes/no question]")
        )
        if row.reminded_at:
            turns.append(Turn(row.reminded_at, "bot", "[check-in reminder sent]"))
    return turns


def vital_reading(entity: dict[str, Any]) -> dict[str, Any]:
    """A stored `vital` entity as the reading the transcript, chart and FHIR export show."""
    return {
        "kind": str(entity.get("kind") or ""),
        "value": entity.get("value"),
        "unit": str(entity.get("unit") or ""),
        "value_c": entity.get("value_c"),
        "diastolic": entity.get("diastolic"),
        "text": str(entity.get("text") or ""),
    }


# ---------------------------------------------------------------------- trends
def levels_per_day(engine: Engine, days: int = 30, now: float | None = None) -> list[tuple[date, dict[str, int]]]:
    """Conversations by highest level, per day of their last message (UTC)."""
    now = now or time.time()
    start = utc_midnight(datetime.fromtimestamp(now, UTC).date()) - (days - 1) * 86400
    per_day: dict[date, Counter] = {}
    with engine.connect() as conn:
        for last_at, level in conn.execute(
            sa.select(SUMMARIES.c.last_at, SUMMARIES.c.level).where(SUMMARIES.c.last_at >= start, SUMMARIES.c.test.is_(sa.false()))
        ):
            per_day.setdefault(datetime.fromtimestamp(last_at, UTC).date(), Counter())[level] += 1
    first = datetime.fromtimestamp(start, UTC).date()
    return [
        (d, {lvl: per_day.get(d, Counter())[lvl] for lvl in LEVELS_BY_SEVERITY})
        for d in (date.fromordinal(first.toordinal() + i) for i in range(days))
    ]


def top_symptoms(engine: Engine, limit: int = 12) -> list[tuple[str, int]]:
    counts: Counter = Counter()
    with engine.connect() as conn:
        for (symptoms,) in conn.execute(
            sa.select(SUMMARIES.c.symptoms).where(SUMMARIES.c.symptoms != "", SUMMARIES.c.test.is_(sa.false()))
        ):
            counts.update(symptoms.split())
    return counts.most_common(limit)


def patient_timeline(engine: Engine, code: str) -> list[Row]:
    """Every conversation of one enrolled patient, oldest first."""
    filters_query = _list_query(Filters()).where(SUMMARIES.c.enrolment_code == code).order_by(None).order_by(SUMMARIES.c.first_at)
    with engine.connect() as conn:
        return _rows(conn.execute(filters_query))


def vital_text(v: dict[str, Any]) -> str:
    """A reading as a nurse writes it: "39.2 °C", "102.5 °F (39.2 °C)", "BP 85/50 mmHg"."""
    kind, value = v.get("kind"), v.get("value")
    if kind == "temperature":
        shown = f"{value:g} °{v.get('unit') or 'C'}"
        if v.get("unit") == "F" and v.get("value_c") is not None:
            shown += f" ({v['value_c']:.1f} °C)"
        return shown
    if kind == "pulse":
        return f"pulse {value:g}/min"
    if kind == "blood_pressure":
        return f"BP {value:g}/{v['diastolic']:g} mmHg" if v.get("diastolic") else f"BP {value:g} systolic"
    if kind == "spo2":
        return f"SpO2 {value:g} %"
    return str(v.get("text") or "")
