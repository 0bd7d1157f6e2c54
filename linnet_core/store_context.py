"""Merchant context: what a store's other products say about each of its products.

A product's *contribution* is its first-pass prediction (the model's fused per-level probabilities,
before any store context) at the top `levels` levels, kept sparse: the `TOP_K` most probable classes per
level. A store's context is the sum of its products' contributions and their count; a product sees the
mean over its store's *other* products (leave-one-out), so a store of one gives no context, training and
calibration never let a product see itself, and scoring a store's products in one batch or one at a time
against a stored aggregate gives the same answer. The context enters the fused logits as one more
evidence (`thresholds.STORE_CONTEXT`), weighted per level like the others.

Pure numpy: the Beam stage (pipelines/store_context.py) and calibration both aggregate with these
functions; the contributions themselves come from the model's own ops (`evidence.store_contributions`,
the SavedModel's `store_evidence` signature).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

LEVELS = 2  # context levels: level 1 (21 branches) and level 2 (192): a store's line of business
TOP_K = 5  # classes kept per level and product: bounded state per product, and noise cut off


@dataclass(frozen=True)
class ContextLayout:
    """Where each context level sits in the flat context vector: level k's classes at
    [offsets[k], offsets[k] + sizes[k])."""

    sizes: tuple[int, ...]

    @property
    def width(self) -> int:
        return int(sum(self.sizes))

    @property
    def offsets(self) -> tuple[int, ...]:
        return tuple(int(x) for x in np.concatenate([[0], np.cumsum(self.sizes)[:-1]]))

    @classmethod
    def of(cls, level_sizes: Sequence[int], levels: int = LEVELS) -> ContextLayout:
        return cls(tuple(int(n) for n in level_sizes[:levels]))

    def split(self, flat: np.ndarray) -> list[np.ndarray]:
        """[N, width] → per context level [N, n_k]."""
        return [flat[:, o:o + n] for o, n in zip(self.offsets, self.sizes, strict=True)]


def leave_one_out(sums: np.ndarray, counts: np.ndarray, own: np.ndarray) -> np.ndarray:
    """float32[N, width]: the mean contribution of each product's store-mates, (sum − own) / (count − 1),
    zeros where the store has no other product.

    Args:
        sums: [N, width] the store's summed contributions (the product's own included).
        counts: [N] the store's product count (the product included).
        own: [N, width] the product's own contribution.
    """
    counts = np.asarray(counts, np.float64)[:, None]
    others = np.asarray(sums, np.float64) - np.asarray(own, np.float64)
    mean = np.where(counts > 1, others / np.maximum(counts - 1, 1), 0.0)
    return np.clip(mean, 0.0, 1.0).astype(np.float32)


def store_contexts(own: np.ndarray, stores: Sequence[str]) -> np.ndarray:
    """Leave-one-out store context of every row, each store aggregated over the rows given (calibration,
    cross-validation: what a batch of a store's products says about each of them)."""
    _, index, counts = np.unique(np.asarray(stores, dtype=object).astype(str), return_inverse=True,
                                 return_counts=True)
    sums = np.zeros((len(counts), own.shape[1]), np.float64)
    np.add.at(sums, index, own)
    return leave_one_out(sums[index], counts[index], own)


@dataclass(frozen=True)
class StoreTable:
    """One published version of the store-context tables in memory (the batch scoring stage writes them):
    each store's summed contributions and product count, and each member product's store and
    contribution. Empty: no stored context, only the products scored together."""

    sums: Mapping[str, np.ndarray] = field(default_factory=dict)
    counts: Mapping[str, int] = field(default_factory=dict)
    members: Mapping[str, tuple[str, np.ndarray]] = field(default_factory=dict)
    version: str | None = None

    def contexts(self, product_ids: Sequence[str], stores: Sequence[str | None], own: np.ndarray
                 ) -> np.ndarray:
        """float32[N, width]: each product's context as a batch run over these products against this
        table gives it — their rows replace their stored ones (by product_id), then each product sees the
        mean of its store-mates; zeros without a store. Product ids must be distinct."""
        totals: dict[str, np.ndarray] = {}
        counts: dict[str, int] = {}
        for store in {store for store in stores if store}:
            totals[store] = np.array(self.sums.get(store, np.zeros(own.shape[1])), np.float64)
            counts[store] = int(self.counts.get(store, 0))
        for product_id in product_ids:
            store, contribution = self.members.get(product_id, (None, None))
            if store in totals:
                totals[store] -= contribution
                counts[store] -= 1
        for store, contribution in zip(stores, own, strict=True):
            if store:
                totals[store] += contribution
                counts[store] += 1
        context = np.zeros(own.shape, np.float32)
        rows = [i for i, store in enumerate(stores) if store]
        if rows:
            context[rows] = leave_one_out(np.stack([totals[stores[i]] for i in rows]),
                                          np.array([counts[stores[i]] for i in rows]), own[rows])
        return context


def level_scores(context: np.ndarray, layout: ContextLayout, level_sizes: Sequence[int]) -> list[np.ndarray]:
    """The context as evidence: per level [N, n_k], the context levels' slices, zeros deeper."""
    split = layout.split(context)
    return [split[k] if k < len(split) else np.zeros((len(context), n), np.float32)
            for k, n in enumerate(level_sizes)]
