"""Find vital signs written with numbers and map them through the knowledge-base thresholds.

Regex over the raw text, because numbers with units ("39,4°C", "85/50", "SpO2 88%") are
tokenised unpredictably. A number is read as a vital when a unit follows it or a vital keyword
precedes it (nothing else in between), or — for temperatures only — when it is a decimal in
the body-temperature range ("it's 39.8 now"). Each reading becomes a present or denied symptom
with the comparison that decided it, so a clinic can see the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from bot.clinical.knowledge import KnowledgeBase

_NUM = r"(\d{2,3}(?:[.,]\d{1,2})?)"

_KEYWORDS = {
    "spo2": r"spo2|sp02|sa02|sao2|o2 sat(?:uration)?s?|o2|oxygen(?: level| saturation| sat(?:uration)?s?)?|sats?|saturations?|"
    r"pulse ?ox(?:imeter)?|oximeter|ox(?:y|i)meter|pulseox|oxygenation",
    "pulse": r"pulse(?! ?ox)(?: rate)?|heart ?rate|hr|heartbeat|heart beat|bpm|heart|tachy(?:cardic|cardia)?|pr",
    "bp": r"blood pressure|bp|b/p|pressure|systolic|sys|top number|upper number",
    "temp": r"temperature|temp|fever|thermometer|febrile|temps",
}
_KEYWORD_RE = re.compile(
    "|".join(f"(?P<{k}>\\b(?:{v})\\b)" for k, v in _KEYWORDS.items()),
    re.IGNORECASE,
)
_BP_RE = re.compile(r"(?<![\d.,/])(\d{2,3})\s*(?:/|\bover\b)\s*(\d{2,3})(?![\d/]|[.,]\d)", re.IGNORECASE)
_TEMP_UNIT_RE = re.compile(
    _NUM + r"\s*(?:°|º|˚|deg(?:ree)?s?\.?)?\s*(?P<unit>celsius|centigrade|fahrenheit|c|f)\b"
    r"|" + _NUM.replace("(", "(?P<deg>", 1) + r"\s*(?:°|º|˚|deg(?:ree)?s?|(?:grades?|gradi|grad)\b)",  # "40 grade temperature"
    re.IGNORECASE,
)
_NUM_RE = re.compile(r"(?<![\d/])" + _NUM + r"(?![\d/])\s*(?P<unit>%|bpm|beats|mm ?hg|/min)?", re.IGNORECASE)
# The gap between a keyword and its number: short, no digits, no sentence end.
_GAP_RE = re.compile(r"[^\d.!?\n]{0,40}")
# Blood pressure said in words: "top number in the 70s", "80-something on top", "systolic 85ish".
_LOOSE = r"(\d{2,3})(?:'?s\b|\s*-?\s*something\b|\s*ish\b)?"
_BP_WORDS_RE = re.compile(
    r"\b(?:(?:top|upper|systolic|sys)\b(?:\s+(?:number|one|reading|pressure|bp))?|first\s+(?:number|one|reading)\b)[^\d\n.!?]{0,25}?"
    + _LOOSE
    + r"|"
    + _LOOSE.replace("(", "(?P<on_top>", 1)
    + r"\s+on\s+(?:the\s+)?top\b"
    + r"|(?P<before>\d{2,3})\s*(?:mm ?hg\s*)?(?:systolic|sys)\b",  # "today it's 82 systolic"
    re.IGNORECASE,
)
# A bare whole number or range that reads as a temperature in °F only with a fever word within
# 80 characters:
# "102 tonight and burning up", "running 101-102", or beside another temperature ("only 37.8
# yesterday, today she's at 104").
_BARE_F_RE = re.compile(
    r"(?<![\d./,])(\d{3})(?:\s*(?:-|to)\s*(\d{3}))?(?![\d/%]|[.,]\d|\s*(?:yrs?|years?|y/?o|yo|kg|kilos?|lbs?|pounds|mg|ml|bpm|beats|mmhg|cm|mm|min\w*|days?)\b)",
    re.IGNORECASE,
)
_FEVER_CUE_RE = re.compile(
    r"\b(?:fever\w*|temp\w*|running|spik\w*|burning|hot|thermometer|thermo|feverish|febrile|chills?|shiver\w*|shaking|rigou?rs|sweat\w*|clammy|boiling|roasting)\b",
    re.IGNORECASE,
)
# A bare whole number of 38 to 42 is a temperature in °C with such a cue within 40 characters
# ("chills and 40"), unless a unit or a count follows it ("chills for 40 minutes").
_AGE_BEFORE_RE = re.compile(r"\b(?:age|aged|i'?m|i am|am|is|turned|turning|day|days|d|week|weeks|no\.?|number|#)\s*$", re.IGNORECASE)
_BARE_C_RE = re.compile(
    r"(?<![\d./,:])(3[89]|4[0-2])(?![\d/%:]|[.,]\d|\s*(?:-|to)\s*\d|\s*(?:min\w*|hours?|hrs?|h\b|secs?|seconds?|years?|yrs?|y/?o|kg|kilo\w*|lbs?|mg|ml|bpm|beats|times|days?|weeks?|months?|x\b|mm|cm|%|breaths|over|/|\s*(?:f|m|yo|y)\b))",
    re.IGNORECASE,
)


# Numbers said in words ("a hundred and three point six", "thirty-nine point five", "one oh
# two", "one thirty-five", "hundred forty"): rewritten as digits padded with spaces to the same length, so every offset still
# points into the patient's own text. Only numbers of 20 and up are rewritten ("one cough").
_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_TEENS = ["ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_VALUE = {w: i for i, w in enumerate(_UNITS)} | {"oh": 0} | {w: 10 + i for i, w in enumerate(_TEENS)}
_VALUE |= {w: 20 + 10 * i for i, w in enumerate(_TENS)}
_UNIT_W = r"(?:one|two|three|four|five|six|seven|eight|nine)"
_DIGIT_W = r"(?:zero|oh|one|two|three|four|five|six|seven|eight|nine)"
_UNDER_100 = rf"(?:(?:{'|'.join(_TENS)})(?:[\s-]+{_UNIT_W})?|{'|'.join(_TEENS)}|{_UNIT_W})"
_SPELLED_RE = re.compile(
    rf"\b(?:(?P<hundred>(?:(?:a|one)[\s-]+)?hundred(?:[\s-]+and)?(?:[\s-]+(?P<rest>{_UNDER_100}))?)"
    rf"|(?P<oh>one[\s-]+oh[\s-]+{_UNIT_W})"
    rf"|(?P<one>one[\s-]+(?:{'|'.join(_TENS)})(?:[\s-]+{_UNIT_W})?)"
    rf"|(?P<tens>(?:{'|'.join(_TENS)})(?:[\s-]+{_UNIT_W})?))"
    rf"(?P<frac>[\s-]+(?:point|comma)[\s-]+{_DIGIT_W}|[\s-]+and[\s-]+a[\s-]+half|[\s-]+and[\s-]+{_UNIT_W})?\b",
    re.IGNORECASE,
)


def _words_value(words: str) -> int:
    return sum(_VALUE[w] for w in re.split(r"[\s-]+", words.lower()) if w in _VALUE)


def spelled_as_digits(text: str) -> tuple[str, list[tuple[int, int]]]:
    """`text` with numbers said in words rewritten as digits, same length (see _SPELLED_RE),
    and the spans rewritten."""

    spans: list[tuple[int, int]] = []

    def digits(m: re.Match[str]) -> str:
        spans.append(m.span())
        if m.group("hundred"):
            value = 100 + (_words_value(m.group("rest")) if m.group("rest") else 0)
        elif m.group("one"):  # "one thirty-five": 135, said the way a reading is read out
            value = 100 + _words_value(re.split(r"[\s-]+", m.group("one"), maxsplit=1)[1])
        elif m.group("oh"):
            value = 100 + _words_value(re.split(r"[\s-]+", m.group("oh"))[-1])
        else:
            value = _words_value(m.group("tens"))
        frac = (m.group("frac") or "").lower()
        if "half" in frac:
            shown = f"{value}.5"
        elif "point" in frac or "comma" in frac or (frac and 34 <= value <= 43):
            # "thirty-nine and seven" is how some say 39.7; "and" reads as a decimal point only there
            shown = f"{value}.{_words_value(frac.split()[-1])}"
        elif frac:  # "twenty and five": the "and five" is left as said
            return str(value).ljust(len(m.group(0)) - len(m.group("frac"))) + m.group("frac")
        else:
            shown = str(value)
        return shown.ljust(len(m.group(0)))

    return _SPELLED_RE.sub(digits, text), spans


@dataclass(frozen=True)
class Vital:
    kind: str  # temperature | pulse | blood_pressure | spo2
    value: float
    unit: str
    text: str
    start: int
    end: int
    symptom: str | None = None
    assertion: str | None = None  # present | absent | None (in between: says nothing)
    evidence: str = ""
    diastolic: float | None = None  # blood pressure only

    @property
    def value_c(self) -> float | None:
        """A temperature in °C whatever unit the patient used (the clinic charts °C)."""
        if self.kind != "temperature":
            return None
        return round((self.value - 32) * 5 / 9, 2) if self.unit == "F" else self.value


def _f(number: str) -> float:
    return float(number.replace(",", "."))


def _in(value: float, bounds: list[float]) -> bool:
    return bounds[0] <= value <= bounds[1]


class VitalsParser:
    """Parses vitals from text; thresholds come from the knowledge base only."""

    def __init__(self, kb: KnowledgeBase) -> None:
        self.t = kb.thresholds
        words = [re.escape(w.lower()) for w in self.t["temperature"].get("not_body") or ()]
        self._not_body = re.compile(rf"\b(?:{'|'.join(words)})\b") if words else None  # weather, cars: not the body

    # -- mapping through thresholds ------------------------------------------------------
    def temperature(self, value: float, unit: str | None, text: str, start: int, end: int) -> Vital | None:
        t = self.t["temperature"]
        if unit is None:
            unit = "C" if _in(value, t["plausible_c"]) else "F" if _in(value, t["plausible_f"]) else None
        if unit is None or not _in(value, t["plausible_c"] if unit == "C" else t["plausible_f"]):
            return None
        high, fever = (t["high_fever_c"], t["fever_c"]) if unit == "C" else (t["high_fever_f"], t["fever_f"])
        normal_below = t["normal_below_c"] if unit == "C" else t["normal_below_c"] * 9 / 5 + 32
        shown = f"temperature {value:g} °{unit}"
        if value >= high:
            return Vital("temperature", value, unit, text, start, end, "high_fever", "present", f"{shown} ≥ {high:g} °{unit}")
        if value >= fever:
            return Vital("temperature", value, unit, text, start, end, "fever", "present", f"{shown} ≥ {fever:g} °{unit}")
        if value < normal_below:
            return Vital("temperature", value, unit, text, start, end, "fever", "absent", f"{shown} < {normal_below:g} °{unit}")
        return Vital("temperature", value, unit, text, start, end, evidence=f"{shown}: borderline")

    def pulse(self, value: float, text: str, start: int, end: int) -> Vital | None:
        p = self.t["pulse"]
        if not _in(value, p["plausible"]):
            return None
        shown = f"pulse {value:g}/min"
        if value > p["rapid_above"]:
            return Vital("pulse", value, "/min", text, start, end, "rapid_heartbeat", "present", f"{shown} > {p['rapid_above']:g}/min")
        if "normal" in p and _in(value, p["normal"]):
            return Vital("pulse", value, "/min", text, start, end, "rapid_heartbeat", "absent", f"{shown} in normal range")
        return Vital("pulse", value, "/min", text, start, end, evidence=shown)

    def blood_pressure(self, systolic: float, diastolic: float | None, text: str, start: int, end: int) -> Vital | None:
        s = self.t["systolic"]
        if not _in(systolic, s["plausible"]):
            return None
        shown = f"blood pressure {systolic:g}/{diastolic:g}" if diastolic else f"systolic pressure {systolic:g}"
        reading = Vital("blood_pressure", systolic, "mmHg", text, start, end, evidence=shown, diastolic=diastolic)
        if systolic < s["low_below"]:
            return replace(reading, symptom="low_blood_pressure", assertion="present", evidence=f"{shown} (systolic < {s['low_below']:g})")
        if "normal_from" in s and systolic >= s["normal_from"]:
            return replace(reading, symptom="low_blood_pressure", assertion="absent", evidence=f"{shown} (systolic ≥ {s['normal_from']:g})")
        return reading

    def spo2(self, value: float, text: str, start: int, end: int) -> Vital | None:
        o = self.t["spo2"]
        if not _in(value, o["plausible"]):
            return None
        shown = f"SpO2 {value:g} %"
        if value < o["low_below"]:
            return Vital("spo2", value, "%", text, start, end, "difficulty_breathing", "present", f"{shown} < {o['low_below']:g} %")
        # A normal saturation does not rule out breathlessness, so it denies nothing.
        return Vital("spo2", value, "%", text, start, end, evidence=shown)

    # -- finding numbers -----------------------------------------------------------------
    def parse(self, text: str) -> list[Vital]:
        """Every vital reading in `text`, in order of appearance."""
        original = text
        text, spelled = spelled_as_digits(text)
        found: list[Vital] = []
        taken: list[tuple[int, int]] = []

        def free(a: int, b: int) -> bool:
            return all(b <= x or a >= y for x, y in taken)

        def add(v: Vital | None, a: int, b: int) -> None:
            if v is not None and free(a, b) and about_the_body(v, a, b):
                found.append(v)
                taken.append((a, b))

        keywords = list(_KEYWORD_RE.finditer(text))

        def keyword_before(pos: int) -> str | None:
            best = None
            for m in keywords:
                if m.end() <= pos and _GAP_RE.fullmatch(text, m.end(), pos):
                    best = m
            return best.lastgroup if best else None

        def about_the_body(v: Vital, a: int, b: int) -> bool:
            """A temperature near `not_body` words is the weather or a car's ("41°C on the dashboard"),
            unless it is said to be a temperature taken ("temp 39.9, we're outside in the garden")."""
            if v.kind != "temperature" or self._not_body is None or keyword_before(a) == "temp":
                return True
            near = text[max(0, a - 45) : a].lower() + " | " + text[b : b + 25].lower()
            return not self._not_body.search(near)

        for m in _BP_RE.finditer(text):
            sys_, dia = _f(m.group(1)), _f(m.group(2))
            if sys_ < dia:  # written the other way round ("bp 60/85"): the higher one is systolic
                sys_, dia = dia, sys_
            kw = keyword_before(m.start())
            plausible = _in(dia, self.t["diastolic"]["plausible"])
            marked = kw in ("bp", None) or re.match(r"\s*mm ?hg", text[m.end() :], re.I)
            if plausible and marked and (kw == "bp" or sys_ >= 60):
                add(self.blood_pressure(sys_, dia, m.group(0), m.start(), m.end()), m.start(), m.end())
        for m in _TEMP_UNIT_RE.finditer(text):
            number = m.group(1) or m.group("deg")
            unit = (m.group("unit") or "").upper()[:1] or None
            add(self.temperature(_f(number), unit, m.group(0), m.start(), m.end()), m.start(), m.end())
        # After the readings with a unit: "at first it was 103 F" is a temperature, not a systolic.
        for m in _BP_WORDS_RE.finditer(text):
            group = "on_top" if m.group("on_top") else "before" if m.group("before") else 1
            number, a, b = m.group(group), m.start(group), m.end(group)
            add(self.blood_pressure(_f(number), None, m.group(0).strip(), a, b), a, b)
        for m in _NUM_RE.finditer(text):
            a, b = m.start(1), m.end()
            if not free(a, b):
                continue
            value = _f(m.group(1))
            unit = (m.group("unit") or "").lower().replace(" ", "")
            kw = keyword_before(a)
            if unit == "%" and kw in (None, "spo2"):
                if kw == "spo2" or re.match(r"[^\d.!?\n]{0,25}\b(?:oxygen|o2|sat)", text[b:], re.I):
                    add(self.spo2(value, m.group(0), a, b), a, b)
            elif unit in ("bpm", "beats", "/min") or (kw == "pulse" and not unit):
                add(self.pulse(value, m.group(0), a, b), a, b)
            elif kw == "spo2":
                add(self.spo2(value, m.group(0), a, b), a, b)
            elif kw == "bp" and unit in ("", "mmhg"):
                add(self.blood_pressure(value, None, m.group(0), a, b), a, b)
            elif kw == "temp" and not unit:
                add(self.temperature(value, None, m.group(0), a, b), a, b)
            elif not unit and re.fullmatch(r"\d{2,3}[.,]\d", m.group(1)):
                # A bare decimal in the body-temperature range ("it's 39.8 now").
                add(self.temperature(value, None, m.group(0), a, b), a, b)
        for m in _BARE_F_RE.finditer(text):
            a, b = m.start(), m.end()
            near = text[max(0, a - 80) : b + 80]
            measured = any(v.kind == "temperature" for v in found)
            if not free(a, b) or keyword_before(a) in ("pulse", "bp", "spo2") or not (measured or _FEVER_CUE_RE.search(near)):
                continue
            value = max(_f(m.group(1)), _f(m.group(2) or m.group(1)))
            if 99 <= value <= 108:
                add(self.temperature(value, "F", m.group(0), a, b), a, b)
        for m in _BARE_C_RE.finditer(text):
            a, b = m.start(), m.end()
            if not free(a, b) or keyword_before(a) in ("pulse", "bp", "spo2") or not _FEVER_CUE_RE.search(text[max(0, a - 40) : b + 40]):
                continue
            if _AGE_BEFORE_RE.search(text[max(0, a - 12) : a]):  # "I'm 40 and have chills", "day 40 post CAR-T"
                continue
            add(self.temperature(_f(m.group(1)), "C", m.group(0), a, b), a, b)
        # A reading that ends inside a number said in words ends where the words end, and every
        # reading's text is the patient's own words between its offsets.
        for i, v in enumerate(found):
            end = max([b for a, b in spelled if a < v.end <= b] + [v.end])
            if (end, v.text) != (v.end, original[v.start : end]):
                found[i] = replace(v, end=end, text=original[v.start : end])
        return sorted(found, key=lambda v: v.start)
