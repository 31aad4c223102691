"""Trend charts rendered on the server as SVG with matplotlib (already installed with Rasa;
no JavaScript, no CDN — the page's CSP forbids both)."""

from __future__ import annotations

import base64
import io
from datetime import date

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend first)

from bot.clinic.conversations import LEVELS_BY_SEVERITY, symptom_label  # noqa: E402

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
