"""Charts rendered on the server as SVG: trends with matplotlib (already installed with Rasa),
a patient's temperature and pulse by hand (see VitalsChart). No JavaScript, no CDN — the
page's CSP forbids both."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from datetime import date

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend first)

from bot.clinic.labels import LEVELS_BY_SEVERITY, symptom_label  # noqa: E402

COLOURS = {"emergency": "#b3261e", "urgent": "#e8a317", "monitor": "#3a7bd5", "none": "#9e9e9e"}


def _svg(fig: plt.Figure) -> str:
    """The chart as a data: URL for an <img> (the page's CSP allows no inline SVG styles)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode()


def levels_per_day_svg(days: list[tuple[date, dict[str, int]]]) -> str:
    fig, ax = plt.subplots(figsize=(9, 3))
    bottom = [0] * len(days)
    labels = [d.strftime("%m-%d") for d, _ in days]
    for level in reversed(LEVELS_BY_SEVERITY):
        values = [counts[level] for _, counts in days]
        ax.bar(labels, values, bottom=bottom, color=COLOURS[level], label=level)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel("conversations")
    ax.set_title("Conversations per day by highest triage level (UTC)")
    ax.tick_params(axis="x", labelrotation=90, labelsize=7)
    ax.legend(loc="upper left", fontsize=8)
    return _svg(fig)


def top_symptoms_svg(top: list[tuple[str, int]]) -> str:
    fig, ax = plt.subplots(figsize=(9, 3.5))
    names = [symptom_label(s) for s, _ in reversed(top)]
    ax.barh(names, [n for _, n in reversed(top)], color="#3a7bd5")
    ax.set_xlabel("conversations")
    ax.set_title("Most frequent symptoms")
    return _svg(fig)


# ---------------------------------------------------------------------- vitals over days since infusion
@dataclass(frozen=True)
class Point:
    x: float
    y: float
    day: float  # days since infusion (or since the first reading)
    value: float  # °C for a temperature, beats/min for a pulse
    label: str  # what the patient wrote, as a nurse reads it ("102.5 °F (39.2 °C)")
    at: float


@dataclass(frozen=True)
class VitalsChart:
    """Geometry of the temperature and pulse chart, drawn by templates/_vitals_chart.html as an
    inline SVG with presentation attributes only (the CSP forbids inline styles; matplotlib's SVG
    uses them), each reading a <circle> with a <title>, so it can be read and tested."""

    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    since: str  # "infusion" or "first reading"
    temperatures: list[Point]
    pulses: list[Point]
    lines: list[tuple[float, str, str]]  # (y, label, colour): fever and high-fever thresholds
    x_ticks: list[tuple[float, str]]
    t_ticks: list[tuple[float, str]]
    p_ticks: list[tuple[float, str]]

    def path(self, points: list[Point]) -> str:
        return " ".join(f"{'M' if i == 0 else 'L'}{p.x:.1f},{p.y:.1f}" for i, p in enumerate(points))


def vitals_chart(readings: list[tuple[float, dict]], start: float | None, fever_c: float, high_fever_c: float) -> VitalsChart | None:
    """`readings`: (unix time, vital dict as transcript.vital_reading gives it). `start`: the
    infusion's unix time (day 0), or None to count from the first reading. None: nothing to draw."""
    from bot.clinic.labels import vital_text

    temps = [(at, v) for at, v in readings if v.get("kind") == "temperature" and v.get("value_c") is not None]
    pulses = [(at, v) for at, v in readings if v.get("kind") == "pulse" and v.get("value") is not None]
    if not temps and not pulses:
        return None
    since = "infusion" if start is not None else "first reading"
    start = start if start is not None else min(at for at, _ in temps + pulses)
    width, height, left, right, top, bottom = 760, 310, 52, 64, 28, 40
    days = [(at - start) / 86400 for at, _ in temps + pulses]
    d0, d1 = min(0.0, min(days)), max(max(days), 1.0)
    t0, t1 = min([35.5] + [v["value_c"] for _, v in temps]), max([high_fever_c + 0.6] + [v["value_c"] for _, v in temps])
    p0, p1 = min([40.0] + [v["value"] for _, v in pulses]), max([160.0] + [v["value"] for _, v in pulses])

    def x(day: float) -> float:
        return left + (day - d0) / (d1 - d0) * (width - left - right)

    def y(value: float, lo: float, hi: float) -> float:
        return top + (hi - value) / (hi - lo) * (height - top - bottom)

    def points(series: list[tuple[float, dict]], key: str, lo: float, hi: float) -> list[Point]:
        out = [
            Point(x((at - start) / 86400), y(v[key], lo, hi), (at - start) / 86400, float(v[key]), vital_text(v), at) for at, v in series
        ]
        return sorted(out, key=lambda p: p.at)

    step = max(1, round((d1 - d0) / 14))
    return VitalsChart(
        width, height, left, right, top, bottom, since,
        temperatures=points(temps, "value_c", t0, t1),
        pulses=points(pulses, "value", p0, p1),
        lines=[
            (y(fever_c, t0, t1), f"fever {fever_c:g} °C", "#e8a317"),
            (y(high_fever_c, t0, t1), f"high fever {high_fever_c:g} °C", "#b3261e"),
        ],
        x_ticks=[(x(d), f"{d:g}") for d in range(int(d0), int(d1) + 1, step)],
        t_ticks=[(y(t, t0, t1), f"{t:g}") for t in range(int(t0) + 1, int(t1) + 1)],
        p_ticks=[(y(p, p0, p1), f"{p:g}") for p in range(int(p0 // 20 * 20 + 20), int(p1) + 1, 20)],
    )  # fmt: skip
