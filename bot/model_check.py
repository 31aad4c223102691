"""Refuse to serve a missing or damaged model instead of starting a half-working bot.

Rasa 3.6 started with an unreadable `--model` logs the error and keeps serving without an
agent: every patient message then gets an error or silence. Before any Rasa server starts
(`make run`, the tests, the container's entrypoint `python -m bot rasa`) the archive is read in
full (gzip checksums) and its `metadata.json` parsed (domain, prediction graph, Rasa version).
"""

from __future__ import annotations

import json
import tarfile
import zlib
from pathlib import Path
from typing import Any


class ModelError(RuntimeError):
    """The model archive cannot be served; the message says what to do."""


def check_model(path: Path) -> dict[str, Any]:
    """The model's metadata if `path` is a complete Rasa model archive; ModelError otherwise."""
    if not path.is_file():
        raise ModelError(f"no trained model at {path}: train one with `make model` (`make run` trains it too)")
    retrain = f"retrain it with `make model` (delete {path} first) or restore a good copy"
    metadata: dict[str, Any] | None = None
    try:
        with tarfile.open(path, "r:gz") as archive:
            for member in archive:
                name = member.name.lstrip("/")
                if member.isfile():
                    data = archive.extractfile(member)
                    content = data.read() if data is not None else b""
                    if name == "metadata.json":
                        metadata = json.loads(content)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise ModelError(f"the model {path} is damaged ({error}): {retrain}") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelError(f"the model {path} has an unreadable metadata.json ({error}): {retrain}") from error
    if not isinstance(metadata, dict):
        raise ModelError(f"{path} is not a Rasa model (no metadata.json): {retrain}")
    missing_keys = [k for k in ("domain", "predict_schema", "rasa_open_source_version") if k not in metadata]
    if missing_keys:
        raise ModelError(f"the model {path} lacks {', '.join(missing_keys)} in its metadata: {retrain}")
    nodes = (metadata.get("predict_schema") or {}).get("nodes")
    if not isinstance(nodes, dict) or not nodes:
        raise ModelError(f"the model {path} has no prediction graph in its metadata: {retrain}")
    # (a component's directory may be absent by right: one with nothing learned writes none)
    return metadata
