"""Exemplar memory: labelled training products (their title embeddings and per-level classes), whose
nearest neighbours give the model a second kind of evidence beside its own heads.

For a product, the level-k exemplar evidence of class j is the share of its `NEIGHBOURS` most similar
exemplars (by cosine of title embeddings) labelled j at level k, each neighbour weighted by
exp((cos − best cos) / `SHARPNESS`) and by its store factor. On stores the model never saw, this
"a product like this one, elsewhere, was filed under j" carries across stores where the trained heads
do not (docs/training.md). Built by `linnet train` from the train split and baked into the SavedModel,
where `decoding.exemplar_shares` computes it as TF ops. numpy only.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from linnet_core.taxonomy import Taxonomy
from linnet_core.training_data import store_factors

EXEMPLARS = "exemplars.npz"
NEIGHBOURS = 20
SHARPNESS = 0.05


class ExemplarsError(ValueError):
    """An exemplar memory that does not fit the taxonomy or is malformed."""


@dataclass(frozen=True)
class Exemplars:
    """M exemplars: unit title vectors [M, dim], class index per level [M, depth] (-1 past the label's
    depth), a weight each [M] (the store factor), and the taxonomy they index."""

    vectors: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    taxonomy_fingerprint: str

    def __post_init__(self) -> None:
        m = len(self.vectors)
        if self.vectors.ndim != 2 or self.labels.ndim != 2 or self.labels.shape[0] != m or \
                self.weights.shape != (m,):
            raise ExemplarsError(f"exemplar arrays disagree: vectors {self.vectors.shape}, labels "
                                 f"{self.labels.shape}, weights {self.weights.shape}")
        if m == 0:
            raise ExemplarsError("an exemplar memory needs at least one exemplar")
        if not np.all(self.weights > 0) or not np.all(np.isfinite(self.vectors)):
            raise ExemplarsError("exemplar weights must be > 0 and vectors finite")

    def check(self, taxonomy: Taxonomy) -> None:
        """Raises ExemplarsError unless the labels index this taxonomy's levels."""
        sizes = taxonomy.level_sizes()
        if self.taxonomy_fingerprint != taxonomy.fingerprint or self.labels.shape[1] != len(sizes) or \
                np.any(self.labels >= np.array(sizes)[None, :]):
            raise ExemplarsError(f"exemplars of taxonomy {self.taxonomy_fingerprint} do not index taxonomy "
                                 f"{taxonomy.version} ({taxonomy.fingerprint})")

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, vectors=self.vectors.astype(np.float32), labels=self.labels.astype(np.int32),
                 weights=self.weights.astype(np.float32),
                 taxonomy_fingerprint=np.array(self.taxonomy_fingerprint))
        return buffer.getvalue()

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> Exemplars:
        """Read an `.npz` written by `save`. Raises ExemplarsError on other content."""
        try:
            with np.load(io.BytesIO(Path(path).read_bytes())) as npz:
                return cls(npz["vectors"].astype(np.float32), npz["labels"].astype(np.int32),
                           npz["weights"].astype(np.float32), str(npz["taxonomy_fingerprint"]))
        except (KeyError, ValueError, OSError) as error:
            raise ExemplarsError(f"{path}: not an exemplar memory: {error}") from error


def build_exemplars(vectors: np.ndarray, labels: np.ndarray, stores: Sequence[str], taxonomy: Taxonomy,
                    store_cap: float | None, factors: np.ndarray | None = None) -> Exemplars:
    """The memory of labelled products: rows without a level-1 label are left out.

    Args:
        vectors: float[M, dim] title embeddings.
        labels: int[M, >= depth] class index per level (training features `label_level_k`).
        stores: each row's store: its weight is the store factor min(1, store_cap / n_store) that
            training uses (`training_data.store_factors`, n_store counted over these rows; None: 1).
        factors: a further factor per row (the weight of labels an audit doubts; 0 leaves the row out);
            None: 1.
    """
    labels = np.asarray(labels, np.int64)[:, :taxonomy.max_depth]
    factors = np.ones(len(labels), np.float32) if factors is None else np.asarray(factors, np.float32)
    keep = (labels[:, 0] >= 0) & (factors > 0)
    vectors = np.asarray(vectors, np.float32)[keep]
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    stores = np.asarray(stores, dtype=object)[keep].astype(str)
    _, store_index, counts = np.unique(stores, return_inverse=True, return_counts=True)
    weights = (store_factors(counts[store_index], store_cap) * factors[keep]).astype(np.float32)
    memory = Exemplars(vectors, labels[keep].astype(np.int32), weights, taxonomy.fingerprint)
    memory.check(taxonomy)
    return memory
