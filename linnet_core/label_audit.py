"""Label audit in the confident-learning way (Northcutt et al., 2021), along the taxonomy: which given
labels a model that never saw their store confidently disputes, what it suggests, and which stores
disagree with it systematically. Pure numpy over node-id paths; the scorings come from
`linnet_core.evaluation.auditing`.

A product's label is *flagged* when, at the first level where its label path and the model's decoded
path part, the decoded node's path probability reaches that node's *confident threshold*: the mean
probability the model gives the products labelled with the node (confident learning's per-class
threshold, so a class the model is always unsure of is not over-flagged, nor a confident one under-).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from linnet_core.taxonomy import Taxonomy

NONE = -1
SYSTEMATIC_MIN_PRODUCTS = 5  # a store's branch needs this many products to be called systematic
SYSTEMATIC_SHARE = 0.5  # ... and at least this share of them flagged
REVIEW_COLUMNS = ("product_id", "store", "given_id", "given_path", "suggested_id", "suggested_path",
                  "evidence", "score", "level", "distance")


@dataclass(frozen=True)
class ConfidentThresholds:
    """Per level (0-based), node id → mean path probability of the products labelled with the node;
    `fallback[k]`, the level's mean over every labelled product, stands in for nodes nobody is labelled
    with (the model may suggest a category the data never uses)."""

    by_node: tuple[dict[int, float], ...]
    fallback: tuple[float, ...]

    def of(self, level: int, node_ids: np.ndarray) -> np.ndarray:
        """float64[N]: the threshold of each node at `level` (0-based; nan for -1)."""
        table, fallback = self.by_node[level], self.fallback[level]
        return np.array([np.nan if node == NONE else table.get(int(node), fallback) for node in node_ids],
                        np.float64)


def confident_thresholds(given_paths: np.ndarray, given_confidences: np.ndarray) -> ConfidentThresholds:
    """Confident thresholds from the given labels' paths (int64[N, D] node ids, -1 past the label) and
    the model's path probability of each of their nodes (float[N, D]).

    Raises:
        ValueError: the two arrays differ in shape.
    """
    given_paths, given_confidences = np.asarray(given_paths), np.asarray(given_confidences, np.float64)
    if given_paths.shape != given_confidences.shape:
        raise ValueError(f"paths {given_paths.shape} and confidences {given_confidences.shape} differ")
    by_node, fallback = [], []
    for k in range(given_paths.shape[1]):
        labelled = given_paths[:, k] != NONE
        nodes, inverse = np.unique(given_paths[labelled, k], return_inverse=True)
        sums = np.bincount(inverse, weights=given_confidences[labelled, k], minlength=len(nodes))
        counts = np.bincount(inverse, minlength=len(nodes))
        by_node.append({int(n): float(s / c) for n, s, c in zip(nodes, sums, counts, strict=True)})
        fallback.append(float(given_confidences[labelled, k].mean()) if labelled.any() else 1.0)
    return ConfidentThresholds(tuple(by_node), tuple(fallback))


@dataclass(frozen=True)
class Audit:
    """Per product: `level` (1-based) where the label and the decoded path first part (0: they never
    part, or no label); there the label's path probability `given_probability`, the decoded node's
    `suggested_probability` and its confident `threshold`; `suggested_paths` (int64[N, D]), the
    decoded path down to its deepest node from that level on that keeps clearing its thresholds (all
    -1 when not flagged); `distance`, edges between the label and the suggestion in the tree;
    `flagged`; `score`, the margin suggested − given probability by which flagged labels are ranked
    (nan when not flagged)."""

    level: np.ndarray
    given_probability: np.ndarray
    suggested_probability: np.ndarray
    threshold: np.ndarray
    suggested_paths: np.ndarray
    distance: np.ndarray
    flagged: np.ndarray
    score: np.ndarray

    @property
    def suggested_id(self) -> np.ndarray:
        """int64[N]: the suggested label (the suggested path's last node), -1 when not flagged."""
        depth = (self.suggested_paths != NONE).sum(axis=1)
        last = self.suggested_paths[np.arange(len(depth)), np.maximum(depth - 1, 0)]
        return np.where(depth > 0, last, NONE)


def parting_level(given_paths: np.ndarray, decoded_paths: np.ndarray) -> np.ndarray:
    """int[N]: the first level (1-based) where both paths have a node and the nodes differ; 0 if none."""
    differs = (given_paths != NONE) & (decoded_paths != NONE) & (given_paths != decoded_paths)
    return np.where(differs.any(axis=1), differs.argmax(axis=1) + 1, 0)


def tree_distance(paths_a: np.ndarray, paths_b: np.ndarray) -> np.ndarray:
    """int[N]: edges between the last nodes of two paths through their deepest common ancestor (ancestor
    rows as `metrics.AncestorTable.path_of` gives them); a missing node counts as the root."""
    depth_a, depth_b = (paths_a != NONE).sum(axis=1), (paths_b != NONE).sum(axis=1)
    common = np.cumprod((paths_a == paths_b) & (paths_a != NONE), axis=1).sum(axis=1)
    return depth_a + depth_b - 2 * common


def audit(given_paths: np.ndarray, given_confidences: np.ndarray, decoded_paths: np.ndarray,
          decoded_confidences: np.ndarray, thresholds: ConfidentThresholds | None = None,
          min_margin: float = 0.0) -> Audit:
    """Flag and rank labels: the default cut is confident learning's (the decoded node clears its
    confident threshold where the paths part) and, with `min_margin` > 0, a decoded node that beats
    the label's node by at least that much path probability.

    Args:
        given_paths, decoded_paths: int64[N, D] node ids per level (-1 past the path).
        given_confidences, decoded_confidences: float[N, D] the model's path probabilities of them.
        thresholds: confident thresholds (default: from these products' labels).

    Raises:
        ValueError: arrays of different shapes.
    """
    arrays = [np.asarray(a) for a in (given_paths, given_confidences, decoded_paths, decoded_confidences)]
    if len({a.shape for a in arrays}) != 1:
        raise ValueError(f"audit arrays differ in shape: {[a.shape for a in arrays]}")
    given_paths, given_confidences, decoded_paths, decoded_confidences = arrays
    thresholds = thresholds or confident_thresholds(given_paths, given_confidences)
    n, depth = given_paths.shape
    level = parting_level(given_paths, decoded_paths)
    rows, at = np.flatnonzero(level > 0), level[level > 0] - 1
    given_p, suggested_p, threshold = (np.full(n, np.nan) for _ in range(3))
    given_p[rows] = given_confidences[rows, at]
    suggested_p[rows] = decoded_confidences[rows, at]
    # Every decoded node's own threshold; a suggestion runs down the path while its nodes clear theirs.
    decoded_thresholds = np.stack([thresholds.of(k, decoded_paths[:, k]) for k in range(depth)], axis=1)
    clears = (decoded_confidences >= decoded_thresholds) & (decoded_paths != NONE)
    threshold[rows] = decoded_thresholds[rows, at]
    flagged = np.zeros(n, bool)
    flagged[rows] = clears[rows, at] & (suggested_p[rows] - given_p[rows] >= min_margin)
    below = np.arange(depth)[np.newaxis, :] >= (level - 1)[:, np.newaxis]
    kept = np.cumprod(np.where(below, clears, True), axis=1).astype(bool) & (decoded_paths != NONE)
    suggested_paths = np.where(kept & flagged[:, np.newaxis], decoded_paths, NONE).astype(np.int64)
    distance = np.where(flagged, tree_distance(given_paths, suggested_paths), 0)
    score = np.where(flagged, suggested_p - given_p, np.nan)
    return Audit(level, given_p, suggested_p, threshold, suggested_paths, distance, flagged, score)


def review_rows(result: Audit, product_id: np.ndarray, store: np.ndarray, given_id: np.ndarray,
                taxonomy: Taxonomy) -> list[dict]:
    """The review table: one row per flagged label, highest score first (product, store, given and
    suggested label with their paths, the evidence in words, score, level, distance)."""
    rows, suggested_ids = [], result.suggested_id
    for i in np.flatnonzero(result.flagged)[np.argsort(-result.score[result.flagged], kind="stable")]:
        given, suggested = taxonomy.node(int(given_id[i])), taxonomy.node(int(suggested_ids[i]))
        level = int(result.level[i])
        evidence = (f"level {level}: label's {given.path[level - 1]!r} p={result.given_probability[i]:.2f}, "
                    f"model's {suggested.path[level - 1]!r} p={result.suggested_probability[i]:.2f} "
                    f"(its confident threshold {result.threshold[i]:.2f}); "
                    f"{int(result.distance[i])} edges apart")
        rows.append({"product_id": str(product_id[i]), "store": str(store[i]),
                     "given_id": given.id, "given_path": given.full_path,
                     "suggested_id": suggested.id, "suggested_path": suggested.full_path,
                     "evidence": evidence, "score": float(result.score[i]), "level": level,
                     "distance": int(result.distance[i])})
    return rows


@dataclass(frozen=True)
class StoreBranch:
    """One store's labels in one level-1 branch: how many, how many flagged (at level 1: the branch
    itself disputed), the branch most flagged ones are moved to, and whether it looks systematic."""

    store: str
    branch: int
    products: int
    flagged: int
    flagged_level1: int
    suggested_branch: int
    suggested_share: float
    systematic: bool

    @property
    def share(self) -> float:
        return self.flagged / self.products


def store_branches(stores: Sequence[str], given_paths: np.ndarray, result: Audit,
                   min_products: int = SYSTEMATIC_MIN_PRODUCTS,
                   min_share: float = SYSTEMATIC_SHARE) -> list[StoreBranch]:
    """Store × given level-1 branch disagreement, most flagged share first: systematic when the store
    has at least `min_products` labels in the branch and at least `min_share` of them are flagged (a
    store that files its sneakers under Home & Garden, not one stray label)."""
    stores, branch = np.asarray(stores).astype(str), np.asarray(given_paths)[:, 0]
    labelled = branch != NONE
    table = []
    for store, node in sorted({(s, int(b)) for s, b in zip(stores[labelled], branch[labelled], strict=True)}):
        rows = np.flatnonzero((stores == store) & (branch == node))
        flagged = rows[result.flagged[rows]]
        moved = Counter(int(result.suggested_paths[i, 0]) for i in flagged if result.level[i] == 1)
        target, count = moved.most_common(1)[0] if moved else (NONE, 0)
        systematic = len(rows) >= min_products and len(flagged) >= min_share * len(rows)
        table.append(StoreBranch(store, node, len(rows), len(flagged), int(sum(moved.values())), target,
                                 count / len(flagged) if len(flagged) else 0.0, systematic))
    return sorted(table, key=lambda e: (-e.share, -e.products, e.store, e.branch))


def example_factors(product_ids: Sequence[str], flagged_ids: Sequence[str],
                    flagged_weight: float) -> np.ndarray:
    """float32[N]: the factor on each example's training weights: `flagged_weight` (0 drops the label,
    1 keeps it whole) for the products an audit flagged, 1 for the others.

    Raises:
        ValueError: flagged_weight outside [0, 1].
    """
    if not 0.0 <= flagged_weight <= 1.0:
        raise ValueError(f"the weight of flagged labels must be in [0, 1], got {flagged_weight!r}")
    flagged = np.isin(np.asarray(product_ids).astype(str), np.asarray(list(flagged_ids), dtype=str))
    return np.where(flagged, flagged_weight, 1.0).astype(np.float32)
