"""Category embeddings: every taxonomy node's full en-US path ("A > B > C") encoded by the products'
text encoder, for the zero-shot taxonomy prior fused into the model's logits.

On stores the model never saw, the similarity between a product's text embedding and its category's
path embedding carries what a supervised head fitted on a few dozen stores does not
(docs/experiments/2026-11-25-store-weights-and-taxonomy-prior.md). The vectors are
computed once by `linnet build-training-data` with the encoder that embeds the products (so train and
serve cannot skew), copied into the model directory by `linnet train`, and baked into the SavedModel,
where `evidence.taxonomy_priors` turns them into per-level priors. numpy only.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from linnet_core.encoders.cache import EmbeddingCache, content_hash
from linnet_core.taxonomy import Taxonomy

CATEGORY_EMBEDDINGS = "category_embeddings.npz"
BATCH = 64


class CategoryEmbeddingsError(ValueError):
    """Category embeddings that do not fit the taxonomy or the encoder they are used with."""


@dataclass(frozen=True)
class CategoryEmbeddings:
    """Node ids (taxonomy order), their L2-normalised path embeddings, and what made them."""

    ids: np.ndarray
    vectors: np.ndarray
    encoder_id: str
    taxonomy_fingerprint: str

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.ids):
            raise CategoryEmbeddingsError(f"{len(self.ids)} ids but vectors of shape {self.vectors.shape}")

    def to_bytes(self) -> bytes:
        """The `.npz` file's content."""
        buffer = io.BytesIO()
        np.savez(buffer, ids=self.ids.astype(np.int64), vectors=self.vectors.astype(np.float32),
                 encoder_id=np.array(self.encoder_id),
                 taxonomy_fingerprint=np.array(self.taxonomy_fingerprint))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> CategoryEmbeddings:
        """Read an `.npz` written by `to_bytes`. Raises CategoryEmbeddingsError on other content."""
        try:
            with np.load(io.BytesIO(data)) as npz:
                return cls(npz["ids"].astype(np.int64), npz["vectors"].astype(np.float32),
                           str(npz["encoder_id"]), str(npz["taxonomy_fingerprint"]))
        except (KeyError, ValueError, OSError) as error:
            raise CategoryEmbeddingsError(f"{source}: not a category embeddings file: {error}") from error

    @classmethod
    def load(cls, path: str | Path) -> CategoryEmbeddings:
        return cls.from_bytes(Path(path).read_bytes(), source=str(path))

    def check(self, taxonomy: Taxonomy) -> None:
        """Raises CategoryEmbeddingsError unless these are exactly the taxonomy's nodes."""
        if self.taxonomy_fingerprint != taxonomy.fingerprint or list(self.ids) != node_ids(taxonomy):
            raise CategoryEmbeddingsError(
                f"category embeddings of taxonomy {self.taxonomy_fingerprint} ({len(self.ids)} nodes) do not "
                f"match taxonomy {taxonomy.version} ({taxonomy.fingerprint})")


def node_ids(taxonomy: Taxonomy) -> list[int]:
    """Every node id, in the taxonomy's order (the rows of the embeddings)."""
    return [node.id for node in taxonomy]


def embed_categories(taxonomy: Taxonomy, encode: Callable[[Sequence[str]], np.ndarray], encoder_id: str,
                     dim: int, cache_dir: str | None = None) -> CategoryEmbeddings:
    """Encode every node's full path with `encode` (the products' text encoder), through the
    embedding cache when given, so only the first build of a taxonomy pays for encoding its paths."""
    ids = node_ids(taxonomy)
    texts = [taxonomy.node(node_id).full_path for node_id in ids]
    cache = None
    vectors: list[np.ndarray | None] = [None] * len(texts)
    if cache_dir:
        cache = EmbeddingCache(cache_dir, encoder_id, dim)
        vectors = [cache.get(content_hash(text)) for text in texts]
    misses = [i for i, vector in enumerate(vectors) if vector is None]
    for start in range(0, len(misses), BATCH):
        batch = misses[start:start + BATCH]
        for i, vector in zip(batch, encode([texts[i] for i in batch]), strict=True):
            vectors[i] = np.asarray(vector, np.float32)
            if cache:
                cache.put(content_hash(texts[i]), vectors[i])
    matrix = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, dim), np.float32)
    matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    return CategoryEmbeddings(np.array(ids, np.int64), matrix, encoder_id, taxonomy.fingerprint)


def level_segments(taxonomy: Taxonomy, ids: Sequence[int], level: int) -> np.ndarray:
    """int32[len(ids)]: each node's level-`level` ancestor's class index (itself at that level), or
    the dummy segment n_level for nodes shallower than `level`, so a segment max over a level-k
    class's segment is the max over its subtree."""
    size = len(taxonomy.level_ids(level))
    segments = []
    for node_id in ids:
        ancestors = taxonomy.ancestors(int(node_id), include_self=True)
        segments.append(taxonomy.level_index(ancestors[level - 1].id) if len(ancestors) >= level else size)
    return np.array(segments, np.int32)
