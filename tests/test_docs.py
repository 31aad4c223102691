"""The README and docs/ name only files that exist, link only to pages that exist, and the README
stays a page: a moved module or a renamed file fails here, not in a reader's hands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot import PROJECT_ROOT

PAGES = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
# a code span that is a path in the repository: `bot/telegram/delivery.py`, `data/checkins.yml`, `deploy/k8s/`
PATH = re.compile(r"`((?:bot|actions|tools|data|tests|deploy|docs|requirements|\.ci)/[A-Za-z0-9_./-]*)`")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_path_a_page_names_exists(page: Path) -> None:
    missing = sorted({m.group(1) for m in PATH.finditer(page.read_text(encoding="utf-8")) if not (PROJECT_ROOT / m.group(1)).exists()})
    assert not missing, f"{page.name} names files that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page: Path) -> None:
    targets = [m.group(1) for m in LINK.finditer(page.read_text(encoding="utf-8")) if "://" not in m.group(1)]
    broken = [t for t in targets if not (page.parent / t).resolve().exists()]
    assert not broken, f"{page.name} links to nothing: {broken}"


def test_the_readme_fits_on_about_a_page() -> None:
    lines = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 80, f"README.md has {len(lines)} lines: the details belong in docs/"


# a repository path anywhere in code, comments and config: bot/clinic/worker.py, data/clinical.yml
CODE_PATH = re.compile(r"(?<![\w/.-])((?:bot|actions|tools|tests|data|docs|deploy|requirements|\.ci)/[\w./-]*\w)")
SOURCES = [
    p
    for pattern in (
        "bot/**/*.py",
        "actions/**/*.py",
        "tools/**/*.py",
        "tests/**/*.py",
        "data/*.yml",
        "deploy/**/*",
        "*.yml",
        "*.toml",
        "requirements/*.in",
    )  # fmt: skip
    for p in sorted(PROJECT_ROOT.glob(pattern))
    if p.is_file() and p.suffix in {".py", ".yml", ".yaml", ".toml", ".service", ".in", ""}
] + [PROJECT_ROOT / "Makefile", PROJECT_ROOT / "Dockerfile", PROJECT_ROOT / ".ci" / "run"]


def test_no_comment_or_setting_names_a_path_that_does_not_exist() -> None:
    """After a move, a docstring or comment still naming the old place misleads the next reader."""
    missing = []
    for source in SOURCES:
        for n, line in enumerate(source.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            missing += [
                f"{source.relative_to(PROJECT_ROOT)}:{n}: {m.group(1)}"
                for m in CODE_PATH.finditer(line)
                if "*" not in m.group(1) and not (PROJECT_ROOT / m.group(1)).exists()
            ]
    assert not missing, missing
