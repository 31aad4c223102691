"""The intent classifier's compiled inference gives scikit-learn's own probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rasa.shared.nlu.training_data.loading import load_data

from bot import PROJECT_ROOT
from bot.nlu.intent_classifier import CompiledPipeline, LinearIntentClassifier, build_pipeline


@pytest.fixture(scope="module")
def fitted() -> tuple[object, CompiledPipeline, list[str]]:
    data = load_data(str(Path(PROJECT_ROOT) / "data" / "nlu.yml"))
    texts = [m.get("text") for m in data.intent_examples]
    pipeline = build_pipeline(LinearIntentClassifier.get_default_config())
    pipeline.fit(texts, [m.get("intent") for m in data.intent_examples])
    return pipeline, CompiledPipeline(pipeline), texts


def test_compiled_matches_sklearn_on_training_texts(fitted: tuple) -> None:
    pipeline, compiled, texts = fitted
    expected = pipeline.predict_proba(texts)
    ours = np.array([compiled.predict_proba(t) for t in texts])
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-12)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_compiled_matches_sklearn_on_any_text(fitted: tuple, text: str) -> None:
    pipeline, compiled, _ = fitted
    np.testing.assert_allclose(compiled.predict_proba(text), pipeline.predict_proba([text])[0], rtol=1e-9, atol=1e-12)


def test_typos_and_texting_style_still_classified(fitted: tuple) -> None:
    _, compiled, _ = fitted
    for text, intent in [("helo there", "greet"), ("thx so much", "thanks"), ("wat is crs", "faq_what_is")]:
        assert compiled.classes[compiled.predict_proba(text).argmax()] == intent, text


def test_the_stored_model_keeps_no_dropped_training_tokens() -> None:
    """CVE-2024-5206: scikit-learn < 1.5 keeps the tokens a vectorizer dropped in `stop_words_`."""
    import io
    import tarfile

    import joblib

    from bot.settings import MODEL_PATH

    with tarfile.open(MODEL_PATH) as archive:
        member = next(m for m in archive if m.name.endswith("linear_intent.joblib"))
        pipeline = joblib.load(io.BytesIO(archive.extractfile(member).read()))
    vectorizers = [v for _, v in pipeline.named_steps["features"].transformer_list]
    assert len(vectorizers) == 2 and all(getattr(v, "stop_words_", None) is None for v in vectorizers)
    assert pipeline.predict(["I can't breathe"])[0] == "report_symptoms", "still works without it"
