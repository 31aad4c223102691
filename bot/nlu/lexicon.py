"""English word knowledge for normalisation: lemmas and a known-word list, both offline.

Both come from spacy-lookups-data (shipped on PyPI). The known-word list tells the spelling
corrector which words are real English ("couch" must never become "cough"); building it reads
a 1M-entry table (~5 s), so the filtered list is cached on disk, keyed by the package version.
"""

from __future__ import annotations

import gzip
import json
import os
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path

import spacy_lookups_data

# Words at least this frequent (log-probability in spaCy's table) count as known English.
MIN_LOG_PROB = -17.5
CACHE_ENV = "CRS_CACHE_DIR"


def _cache_dir() -> Path:
    base = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "crs-bot")
    return Path(base)


def _read_table(name: str) -> dict:
    path = Path(spacy_lookups_data.__file__).parent / "data" / f"{name}.json.gz"
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return json.load(fh)


@lru_cache(maxsize=1)
def lemma_table() -> dict[str, str]:
    """Form → lemma (inflected forms only; a word missing from it is its own lemma)."""
    return _read_table("en_lemma_lookup")


@lru_cache(maxsize=1)
def known_words() -> frozenset[str]:
    """Frequent alphabetic English words, from the cache or built from lexeme_prob."""
    path = _cache_dir() / f"english-words-{version('spacy-lookups-data')}-{MIN_LOG_PROB}.txt"
    try:
        return frozenset(path.read_text(encoding="utf-8").split())
    except OSError:
        pass
    probs = _read_table("en_lexeme_prob")
    words = {w.lower() for w, p in probs.items() if p >= MIN_LOG_PROB and w.isalpha()}
    words.update(lemma_table())
    words.update(lemma_table().values())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text("\n".join(sorted(words)), encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass  # a read-only home only costs the 5 s again next start
    return frozenset(words)
