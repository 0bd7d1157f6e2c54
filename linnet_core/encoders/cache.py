"""Embedding cache: one small file per (encoder id, sha256 of the exact input), written atomically.

One file per key needs no locking: several worker processes may write the same key at once and each
write is a temp file renamed into place, so readers see either nothing or a whole vector.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

import numpy as np

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def content_hash(data: str | bytes) -> str:
    """sha256 hex of the exact bytes (text as UTF-8): the content half of a cache key."""
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


class EmbeddingCache:
    """Vectors of one encoder under `root/<encoder id>/<key[:2]>/<key>.f32` (raw little-endian float32).

    Only local (or mounted) directories: the core library does not depend on Beam's FileSystems.

    Raises:
        ValueError: a `scheme://` root, or a dimension below 1.
    """

    def __init__(self, root: str | Path, encoder_id: str, dim: int) -> None:
        if "://" in str(root):
            raise ValueError(f"embedding cache must be a local directory, got {root!r}")
        if dim < 1:
            raise ValueError(f"embedding dimension must be positive, got {dim}")
        self.folder = Path(root) / _UNSAFE.sub("_", encoder_id.replace("/", "__"))
        self.dim = dim

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.f32"

    def get(self, key: str) -> np.ndarray | None:
        """The cached vector, or None when absent or not a whole vector (a truncated file is a miss)."""
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        if len(data) != 4 * self.dim:
            return None
        return np.frombuffer(data, dtype="<f4").astype(np.float32)

    def put(self, key: str, vector: np.ndarray) -> None:
        """Store `vector` under `key` (temp file + rename, so concurrent writers never tear a file)."""
        vector = np.asarray(vector, dtype="<f4").reshape(-1)
        if vector.size != self.dim:
            raise ValueError(f"vector of size {vector.size} in a cache of dimension {self.dim}")
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:16]}-", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(vector.tobytes())
            os.replace(partial, path)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
