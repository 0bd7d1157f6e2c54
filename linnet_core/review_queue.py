"""Which unlabelled products to label next: the ones the model is least sure of, in branches the training
labels cover thinly, spread over stores (a store's products are near-duplicates, so its tenth uncertain
product teaches less than another store's first). Pure numpy.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Candidates:
    """N unlabelled products as the model sees them.

    Attributes:
        product_id, store: [N].
        margin: float[N] level-1 probability of the best branch minus the runner-up's (0: a coin flip).
        entropy: float[N] level-1 entropy over log(number of branches) (1: no idea at all).
        branch: int64[N] the node whose training coverage counts: the decoded level-2 node (level 1 when
            the decoded path stops there).
        coverage: int[N] training labels under `branch`.
    """

    product_id: np.ndarray
    store: np.ndarray
    margin: np.ndarray
    entropy: np.ndarray
    branch: np.ndarray
    coverage: np.ndarray


def level1_uncertainty(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(margin, normalised entropy, the two best class indexes int[N, 2]) of level-1 probabilities
    float[N, C] (rows summing to 1).

    Raises:
        ValueError: not a 2-d array of at least two classes.
    """
    p = np.asarray(probabilities, np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"need level-1 probabilities [N, >= 2 classes], got shape {p.shape}")
    top = np.argsort(-p, axis=1, kind="stable")[:, :2]
    best = np.take_along_axis(p, top, axis=1)
    entropy = -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=1) / math.log(p.shape[1])
    return best[:, 0] - best[:, 1], entropy, top


def priority(candidates: Candidates) -> np.ndarray:
    """float[N]: uncertainty (1 − margin) times thinness 1 / (1 + log(1 + coverage)): an unsure product
    in a branch with no labels comes first, an unsure one where thousands of labels exist later."""
    return (1.0 - candidates.margin) / (1.0 + np.log1p(candidates.coverage))


def select(candidates: Candidates, budget: int, per_store_cap: int | None = None) -> list[int]:
    """Up to `budget` rows, in pick order: greedily the highest priority divided by (1 + products
    already picked in its branch), with at most `per_store_cap` per store (default: the budget shared
    evenly among the stores, raised only when the stores under it run out of products).

    Raises:
        ValueError: budget < 1 or per_store_cap < 1.
    """
    if budget < 1 or (per_store_cap is not None and per_store_cap < 1):
        raise ValueError(f"budget and store cap must be >= 1, got {budget} and {per_store_cap}")
    stores = np.asarray(candidates.store).astype(str)
    cap = per_store_cap or math.ceil(budget / max(len(np.unique(stores)), 1))
    base = priority(candidates)
    order = np.lexsort((np.asarray(candidates.product_id).astype(str), -base))  # ties: by product id
    picked: list[int] = []
    taken = np.zeros(len(base), bool)
    per_store: Counter[str] = Counter()
    per_branch: Counter[int] = Counter()
    while len(picked) < min(budget, len(base)):
        best, best_gain = -1, -1.0
        for i in order:
            if taken[i] or per_store[stores[i]] >= cap:
                continue
            gain = base[i] / (1 + per_branch[int(candidates.branch[i])])
            if gain > best_gain:
                best, best_gain = i, gain
            if base[i] <= best_gain:  # sorted by base: no later row can do better
                break
        if best < 0:
            if per_store_cap is not None:
                break
            cap += 1  # every store with products left is at the cap: share the rest
            continue
        picked.append(int(best))
        taken[best] = True
        per_store[stores[best]] += 1
        per_branch[int(candidates.branch[best])] += 1
    return picked


def reasons(candidates: Candidates, picked: list[int], branch_names: dict[int, str],
            top_names: list[tuple[str, str]]) -> list[str]:
    """Why each picked row is in the queue, in words (`top_names[i]`: the two best level-1 branches of
    picked row i; `branch_names`: node id → path)."""
    stores = np.asarray(candidates.store).astype(str)
    seen: Counter[str] = Counter()
    lines = []
    for i, row in enumerate(picked):
        seen[stores[row]] += 1
        first, second = top_names[i]
        lines.append(f"uncertain: level-1 margin {candidates.margin[row]:.2f} ({first} vs {second}), entropy "
                     f"{candidates.entropy[row]:.2f}; {int(candidates.coverage[row])} training labels under "
                     f"{branch_names.get(int(candidates.branch[row]), '?')}; store {stores[row]}'s pick "
                     f"{seen[stores[row]]}")
    return lines
