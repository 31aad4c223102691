"""`make fuzz`: coverage-guided fuzzing (atheris, libFuzzer) of the symptom extractor and the triage.

Each input is decoded as text and goes the way a patient message goes: the extractor (spaCy
pipeline, context rules, vitals parser), the entities the Rasa component makes of it, the
triage rules. Any exception, or a result outside the contract, is a crash: libFuzzer stops and
writes the input to `var/fuzz/crash-*`. Our own modules are instrumented for coverage; the seed
corpus is the project's case messages, and what the run finds is kept in `var/fuzz/corpus`.

    python -m tools.fuzz -max_total_time=300     # what `make fuzz` runs (FUZZ_SECONDS=300)
    python -m tools.fuzz -runs=2000              # a short run (make test does this)

Why atheris: it is Google's maintained libFuzzer binding for CPython, a wheel on PyPI for
Python 3.11 with nothing to build or download at run time.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["bot.nlu", "actions"]):
    from actions.conversation import MessageFindings, TriageState
    from actions.triage import RANK
    from bot.clinical.knowledge import load_knowledge_base
    from bot.nlu.extractor import MAX_CHARS, SymptomExtractor
    from bot.nlu.rasa_component import findings_to_entities

from bot import PROJECT_ROOT

FUZZ_DIR = Path(os.environ.get("CRS_FUZZ_DIR") or PROJECT_ROOT / "var" / "fuzz")
KB = load_knowledge_base()
EXTRACTOR = SymptomExtractor(KB)
ASSERTIONS = {"present", "absent", "hypothetical"}


def check(text: str) -> None:
    """One message through extraction and triage; AssertionError when the contract is broken."""
    findings = EXTRACTOR(text)
    assert findings.truncated == (len(text) > MAX_CHARS)
    for m in findings.mentions:
        assert m.symptom in KB.symptoms, m
        assert m.assertion in ASSERTIONS, m
        assert 0 <= m.start <= m.end <= min(len(text), MAX_CHARS), m
    entities = findings_to_entities(findings)
    json.dumps(entities)  # what Rasa stores must serialise
    state, assessment = TriageState().with_findings(MessageFindings.from_entities(entities, KB)).assessed(KB)
    assert assessment.level in RANK and state.level == assessment.level
    emergency = {s for s in findings.present if KB.symptom_class(s) == "emergency"}
    assert not emergency or state.level == "emergency", (emergency, state.level)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    check(fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes()))


def seed_corpus(directory: Path) -> None:
    """The case messages as starting points (once)."""
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        return
    cases = PROJECT_ROOT / "data" / "cases" / "own.jsonl"
    for i, line in enumerate(cases.read_text().splitlines()):
        for k, message in enumerate(json.loads(line).get("messages", [])):
            # FuzzedDataProvider's unicode: a first byte choosing the width, then the text
            (directory / f"case-{i}-{k}").write_bytes(b"\x00" + message.encode("ascii", "ignore"))


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv if argv is None else argv)
    corpus = FUZZ_DIR / "corpus"
    seed_corpus(corpus)
    if not any(a.startswith("-artifact_prefix=") for a in argv):
        argv.append(f"-artifact_prefix={FUZZ_DIR}/")
    argv.append(str(corpus))
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
