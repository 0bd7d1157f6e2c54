"""What both encoders share: ONNX Runtime sessions run from a thread pool, and model fingerprints."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path


def fingerprint(paths: Sequence[Path]) -> str:
    """A short content fingerprint of model files: size plus the first and last MiB of each.

    Cheap enough to compute at every load and it changes whenever weights are re-exported, so embedding
    cache keys never mix two versions of a model.
    """
    digest = hashlib.sha256()
    for path in paths:
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with path.open("rb") as handle:
            digest.update(handle.read(1 << 20))
            handle.seek(max(size - (1 << 20), 0))
            digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:16]


def single_threaded_session(path: Path):
    """An ONNX Runtime CPU session whose runs each use one thread (callers run several concurrently)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
