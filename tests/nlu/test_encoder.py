"""The NumPy encoder gives sentence-transformers' vectors, and refuses weights it cannot vouch for."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bot.nlu.encoder import MiniLMEncoder, ModelIntegrityError, packaged_model_dir, sha256_of, verify_model
from bot.nlu.semantic import load_semantic_config

# Computed once with sentence-transformers (torch, CPU) on the same package's files; see docs/architecture.md.
REFERENCE = json.loads((Path(__file__).parent / "fixtures" / "minilm_reference.json").read_text(encoding="utf-8"))
CHECKSUMS = load_semantic_config().checksums


@pytest.fixture(scope="module")
def encoder() -> MiniLMEncoder:
    return MiniLMEncoder.from_package(CHECKSUMS)


def test_vectors_equal_sentence_transformers(encoder: MiniLMEncoder) -> None:
    ours = encoder.encode(REFERENCE["sentences"])
    theirs = np.array(REFERENCE["vectors"], dtype=np.float32)
    cosine = (ours * theirs).sum(1) / np.linalg.norm(theirs, axis=1)
    assert cosine.min() >= 0.9999, list(zip(REFERENCE["sentences"], cosine.round(6), strict=True))


def test_a_batch_gives_the_vectors_of_single_sentences(encoder: MiniLMEncoder) -> None:
    """Padding inside a batch must not change any sentence's vector."""
    sentences = REFERENCE["sentences"]
    batch = encoder.encode(sentences)
    alone = np.stack([encoder.encode([s])[0] for s in sentences])
    assert np.allclose(batch, alone, atol=1e-5)
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)


def test_the_pinned_checksums_are_the_published_ones() -> None:
    """data/semantic.yml pins the official model's SHA-256 (revision 1110a24…), not whatever is installed."""
    assert CHECKSUMS["model.safetensors"] == "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    assert CHECKSUMS["tokenizer.json"] == "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
    verify_model(packaged_model_dir(), CHECKSUMS)


def test_altered_weights_are_refused(tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(packaged_model_dir(), model)
    with (model / "model.safetensors").open("r+b") as fh:
        fh.seek(100_000)
        byte = fh.read(1)
        fh.seek(100_000)
        fh.write(bytes([byte[0] ^ 1]))  # one bit flipped in a weight
    with pytest.raises(ModelIntegrityError, match="model.safetensors"):
        MiniLMEncoder(model, CHECKSUMS)
    assert sha256_of(model / "tokenizer.json") == CHECKSUMS["tokenizer.json"]


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelIntegrityError, match="missing"):
        verify_model(tmp_path, CHECKSUMS)
