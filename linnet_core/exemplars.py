"""Exemplar memory: labelled training products (their title embeddings and per-level classes), whose
nearest neighbours give the model a second kind of evidence beside its own heads.

For a product, the level-k exemplar evidence of class j is the share of its `NEIGHBOURS` most similar
exemplars (by cosine of title embeddings) labelled j at level k, each neighbour weighted by
exp((cos − best cos) / `SHARPNESS`) and by its store factor. On stores the model never saw, this
"a product like this one, elsewhere, was filed under j" carries across stores where the trained heads
do not (docs/training.md). Built by `linnet train` from the train split and baked into the SavedModel,
where `evidence.exemplar_shares` computes it as TF ops. numpy only.

Bounded (`bound`): at most `per_store_class` exemplars of one store in one class and `per_class` in one
class (taken round-robin over the class's stores), each kept exemplar standing for the ones of its store
and class that were left out (its weight scaled by their count), so a store's weight in a class is kept.
The memory then grows with stores × classes, not with products.
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


def _ranks(groups: np.ndarray) -> np.ndarray:
    """Each row's position among the rows of its group, in row order."""
    order = np.argsort(groups, kind="stable")
    ordered = groups[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ranks = np.empty(len(groups), np.int64)
    ranks[order] = np.arange(len(groups)) - np.repeat(starts, np.diff(np.r_[starts, len(groups)]))
    return ranks


def bound(labels: np.ndarray, stores: np.ndarray, weights: np.ndarray, per_class: int,
          per_store_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Which rows a bounded memory keeps, and their weights.

    A class is a whole label path. Per (store, class) the first `per_store_class` rows are kept, then per
    class at most `per_class` of those, rank by rank over its stores (every store's first row, then
    every store's second, ...). A kept row's weight is scaled by rows / kept rows of its (store, class),
    so the group weighs what it weighed whole. A cap of 0 is no cap.

    Returns:
        (int64 indexes of the kept rows in row order, their float32 weights)
    """
    klass = np.unique(labels, axis=0, return_inverse=True)[1].reshape(-1)
    store = np.unique(stores, return_inverse=True)[1].reshape(-1)
    group = klass.astype(np.int64) * (store.max() + 1) + store
    rank = _ranks(group)
    keep = rank < per_store_class if per_store_class > 0 else np.ones(len(group), bool)
    if per_class > 0:
        candidates = np.flatnonzero(keep)
        round_robin = candidates[np.lexsort((store[candidates], rank[candidates]))]
        keep = np.zeros(len(group), bool)
        keep[round_robin[_ranks(klass[round_robin]) < per_class]] = True
    kept = np.flatnonzero(keep)
    _, group_index, group_size = np.unique(group, return_inverse=True, return_counts=True)
    kept_size = np.bincount(group_index[kept], minlength=len(group_size))
    scale = group_size[group_index[kept]] / kept_size[group_index[kept]]
    return kept, (weights[kept] * scale).astype(np.float32)


def build_exemplars(vectors: np.ndarray, labels: np.ndarray, stores: Sequence[str], taxonomy: Taxonomy,
                    store_cap: float | None, per_class: int = 0, per_store_class: int = 0,
                    factors: np.ndarray | None = None) -> Exemplars:
    """The memory of labelled products: rows without a level-1 label are left out.

    Args:
        vectors: float[M, dim] title embeddings.
        labels: int[M, >= depth] class index per level (training features `label_level_k`).
        stores: each row's store: its weight is the store factor min(1, store_cap / n_store) that
            training uses (`training_data.store_factors`, n_store counted over these rows; None: 1).
        per_class, per_store_class: the bounds of `bound` (0: brute force, every labelled row).
        factors: a further factor per row (the weight of labels an audit doubts; 0 leaves the row out);
            None: 1.
    """
    labels = np.asarray(labels, np.int64)[:, :taxonomy.max_depth]
    factors = np.ones(len(labels), np.float32) if factors is None else np.asarray(factors, np.float32)
    keep = (labels[:, 0] >= 0) & (factors > 0)
    vectors = np.asarray(vectors, np.float32)[keep]
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    labels = labels[keep]
    stores = np.asarray(stores, dtype=object)[keep].astype(str)
    _, store_index, counts = np.unique(stores, return_inverse=True, return_counts=True)
    weights = (store_factors(counts[store_index], store_cap) * factors[keep]).astype(np.float32)
    if per_class or per_store_class:
        rows, weights = bound(labels, stores, weights, per_class, per_store_class)
        vectors, labels = vectors[rows], labels[rows]
    memory = Exemplars(vectors, labels.astype(np.int32), weights, taxonomy.fingerprint)
    memory.check(taxonomy)
    return memory
