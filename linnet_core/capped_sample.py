"""The capped sample of a split: the acceptance set holds unseen stores with at most 150 products each,
so evaluation, cross-validation, calibration and the label audit also work on at most that many
products per store. A row cap, unlike training's store weight cap (`WeightConfig.store_cap`). Pure numpy.
"""

from __future__ import annotations

import hashlib

import numpy as np

MAX_PRODUCTS_PER_STORE = 150  # products per store in the acceptance set


def _rank_key(product_id) -> bytes:
    return hashlib.sha256(str(product_id).encode("utf-8")).digest()


def capped_rows(product_ids: np.ndarray, stores: np.ndarray,
                max_per_store: int = MAX_PRODUCTS_PER_STORE) -> np.ndarray:
    """int64[M], ascending: the rows kept when every store keeps at most `max_per_store` products, those
    with the smallest sha256(product_id), so the choice is the same run to run and does not depend on
    row order.

    Raises:
        ValueError: max_per_store < 1, or product_ids and stores of different shapes.
    """
    if max_per_store < 1:
        raise ValueError(f"the per-store cap must be a positive number of products, got {max_per_store!r}")
    product_ids, stores = np.asarray(product_ids), np.asarray(stores).astype(str)
    if product_ids.shape != stores.shape:
        raise ValueError(f"product_ids {product_ids.shape} and stores {stores.shape} differ in shape")
    kept: list[int] = []
    for store in np.unique(stores):
        rows = np.flatnonzero(stores == store)
        kept.extend(sorted(rows, key=lambda i: _rank_key(product_ids[i]))[:max_per_store])
    return np.sort(np.array(kept, dtype=np.int64))
