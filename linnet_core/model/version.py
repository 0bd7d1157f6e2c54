"""The content-addressed model version: a hash over what a deployed model directory computes with.

Two exports with the same weights, config, thresholds (temperatures and evidence weights included),
taxonomy, evidence files, Shopify mapping and encoder ids carry the same version; a retune gives a
new one, so staging (`linnet dataflow-submit`) and lineage follow the content. Standard library only:
launchers recompute it without TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from linnet_core.model import MODEL_JSON, SHOPIFY_COPY, TAXONOMY_COPY, calibration_path

VERSION_PREFIX = "linnet-"
DIGEST_CHUNK_BYTES = 8 << 20
# Files (or folders) of a model directory that export reads, hashed when present. saved_model/ is
# export's output and carries the version itself; reports and the model card describe, not compute.
# The thresholds enter as their content (`version_parts`), as export hashes them before writing them.
CONTENT_FILES = ("training_model.weights.h5", "config.json", TAXONOMY_COPY, "category_embeddings.npz",
                 "exemplars.npz", "encoders.json", SHOPIFY_COPY)


def content_version(parts: Mapping[str, str]) -> str:
    """The version of a model made of `parts` (name → digest or id).

    A new kind of deployable content (a store-context reference, ...) is one more key: versions of
    models without it stay as they were.
    """
    payload = json.dumps(dict(parts), sort_keys=True, separators=(",", ":"))
    return f"{VERSION_PREFIX}{hashlib.sha256(payload.encode()).hexdigest()[:16]}"


def file_digest(path: Path) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents, in name order)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            while chunk := handle.read(DIGEST_CHUNK_BYTES):
                digest.update(chunk)
    return digest.hexdigest()


def version_parts(model_dir: str | Path, info: Mapping, thresholds: Mapping) -> dict[str, str]:
    """What a model directory's version hashes: the digest of every content file present, the
    thresholds' content (`Thresholds.to_json()`: levels, overrides, temperatures, evidence weights),
    and model.json's taxonomy fingerprint and default decoding (`info`: model.json's content)."""
    model_dir = Path(model_dir)
    parts = {name: file_digest(model_dir / name) for name in CONTENT_FILES if (model_dir / name).exists()}
    canonical = json.dumps(dict(thresholds), sort_keys=True, separators=(",", ":"))
    parts["thresholds"] = hashlib.sha256(canonical.encode()).hexdigest()
    parts["taxonomy_fingerprint"] = info["taxonomy_fingerprint"]
    parts["default_decoding"] = info.get("default_decoding", "exact")
    return parts


def directory_version(model_dir: str | Path) -> str:
    """The version a model directory's files hash to now: export's `model_version` for them, as long as
    nothing changed since (calibration.json is the file export wrote, `Thresholds.to_json()`)."""
    model_dir = Path(model_dir)
    info = json.loads((model_dir / MODEL_JSON).read_text(encoding="utf-8"))
    thresholds = json.loads(calibration_path(model_dir).read_text(encoding="utf-8"))
    return content_version(version_parts(model_dir, info, thresholds))
