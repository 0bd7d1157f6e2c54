"""Hierarchical categorization metrics, exactly as ../shared/notes/metrics.md defines them (pure numpy).

Node ids are GPT ids; -1 in a prediction means "abstained", -1 in a label means "unlabelled".
Unlabelled products count in coverage (and depth-k coverage) only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from linnet_core.taxonomy import Taxonomy, TaxonomyError

NONE = -1
ECE_BINS = 15


class AncestorTable:
    """Each node's ancestor id at every level (a row of `max_depth` ids, -1 past its depth).

    Built once per taxonomy so that |Anc(a) ∩ Anc(b)| for whole arrays of nodes is a vectorised
    comparison of rows: in a tree two nodes share their level-k ancestor only if they share all above.
    """

    def __init__(self, taxonomy: Taxonomy) -> None:
        self.taxonomy = taxonomy
        self.ids = np.array(sorted(node.id for node in taxonomy), dtype=np.int64)
        self.max_depth = taxonomy.max_depth
        # Row 0 stands for "no node" (abstained / unlabelled): all -1, depth 0.
        self.paths = np.full((len(self.ids) + 1, self.max_depth), NONE, dtype=np.int64)
        for row, node_id in enumerate(self.ids, start=1):
            chain = [n.id for n in taxonomy.ancestors(int(node_id), include_self=True)]
            self.paths[row, : len(chain)] = chain
        self.depths = (self.paths != NONE).sum(axis=1)
        self.leaf = np.array([False] + [taxonomy.node(int(i)).is_leaf for i in self.ids])

    def rows(self, node_ids: np.ndarray) -> np.ndarray:
        """Row index of each id (0 for -1). Raises TaxonomyError naming an id not in the taxonomy."""
        node_ids = np.asarray(node_ids, dtype=np.int64)
        position = np.searchsorted(self.ids, node_ids)
        position = np.minimum(position, len(self.ids) - 1)
        known = self.ids[position] == node_ids
        missing = ~known & (node_ids != NONE)
        if missing.any():
            raise TaxonomyError(f"node id {int(node_ids[missing][0])} is not in taxonomy "
                                f"{self.taxonomy.version} ({int(missing.sum())} such ids)")
        return np.where(known, position + 1, 0)

    def path_of(self, node_ids: np.ndarray) -> np.ndarray:
        """int64[N, max_depth]: the ancestors (self included) of each node per level, -1 past its depth."""
        return self.paths[self.rows(node_ids)]

    def depth_of(self, node_ids: np.ndarray) -> np.ndarray:
        """Depth of each node (0 for -1)."""
        return self.depths[self.rows(node_ids)]

    def is_leaf(self, node_ids: np.ndarray) -> np.ndarray:
        """Whether each node is a leaf of the taxonomy (False for -1)."""
        return self.leaf[self.rows(node_ids)]


@dataclass(frozen=True)
class Joined:
    """Predictions and labels turned into per-product ancestor rows, shared by every metric."""

    predicted: np.ndarray  # int64[N, D] ancestors of the prediction
    true: np.ndarray  # int64[N, D] ancestors of the label
    predicted_depth: np.ndarray  # int[N], 0 = abstained
    true_depth: np.ndarray  # int[N], 0 = unlabelled

    @classmethod
    def build(cls, predicted_ids: np.ndarray, true_ids: np.ndarray, table: AncestorTable) -> Joined:
        predicted_ids = np.asarray(predicted_ids, dtype=np.int64)
        true_ids = np.asarray(true_ids, dtype=np.int64)
        if predicted_ids.shape != true_ids.shape or predicted_ids.ndim != 1:
            raise ValueError(f"predicted and true ids must be 1-d of one length, got "
                             f"{predicted_ids.shape} and {true_ids.shape}")
        return cls(table.path_of(predicted_ids), table.path_of(true_ids),
                   table.depth_of(predicted_ids), table.depth_of(true_ids))

    @property
    def labelled(self) -> np.ndarray:
        return self.true_depth > 0

    @property
    def overlap(self) -> np.ndarray:
        """|α_i ∩ β_i| per product."""
        return ((self.predicted == self.true) & (self.predicted != NONE)).sum(axis=1)

    @property
    def exact(self) -> np.ndarray:
        """Ŷ_i = Y_i for a labelled product that got a prediction."""
        return (self.predicted_depth > 0) & (self.predicted_depth == self.true_depth) & (
            self.overlap == self.true_depth)


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else float("nan")


def hierarchical_prf(joined: Joined) -> tuple[float, float, float]:
    """Micro hP, hR, hF1 over labelled products (abstentions add to hR's denominator only)."""
    labelled = joined.labelled
    overlap = joined.overlap[labelled].sum()
    precision = _ratio(overlap, joined.predicted_depth[labelled].sum())
    recall = _ratio(overlap, joined.true_depth[labelled].sum())
    if recall == 0 or precision == 0:
        return precision, recall, 0.0
    return precision, recall, 2 * precision * recall / (precision + recall)


def exact_accuracy(joined: Joined) -> float:
    """Share of labelled products with Ŷ = Y (an abstention is wrong)."""
    return _ratio(joined.exact[joined.labelled].sum(), joined.labelled.sum())


def level_accuracy(joined: Joined) -> list[float]:
    """Per level k: among labelled products of true depth ≥ k, the share whose level-k ancestor is right."""
    result = []
    for k in range(joined.true.shape[1]):
        eligible = joined.true_depth > k
        right = joined.predicted[:, k] == joined.true[:, k]
        result.append(_ratio((right & eligible).sum(), eligible.sum()))
    return result


def coverage(joined: Joined) -> float:
    """Share of all products (labelled or not) that get a prediction."""
    return _ratio((joined.predicted_depth > 0).sum(), len(joined.predicted_depth))


def depth_coverage(joined: Joined) -> list[float]:
    """Per level k: share of all products with a prediction of depth ≥ k."""
    n = len(joined.predicted_depth)
    return [_ratio((joined.predicted_depth > k).sum(), n) for k in range(joined.predicted.shape[1])]


def leaf_coverage(joined: Joined) -> float:
    """Share of labelled products predicted down to the true node's depth."""
    labelled = joined.labelled
    return _ratio((joined.predicted_depth[labelled] >= joined.true_depth[labelled]).sum(), labelled.sum())


def leaf_precision(joined: Joined, is_leaf: np.ndarray) -> float:
    """Among labelled products predicted to a leaf or to the true depth, the share exactly right.

    Args:
        is_leaf: bool[N], whether each prediction is a leaf of the taxonomy.
    """
    eligible = joined.labelled & (joined.predicted_depth > 0) & (
        is_leaf | (joined.predicted_depth >= joined.true_depth))
    return _ratio((joined.exact & eligible).sum(), eligible.sum())


def risk_coverage(confidence: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The risk–coverage curve of thresholding `confidence`.

    For each distinct confidence θ (descending), the items with confidence ≥ θ are covered.

    Returns:
        (thresholds, coverage, risk): coverage = covered share, risk = mean loss among covered.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    if confidence.shape != loss.shape or confidence.ndim != 1:
        raise ValueError(f"confidence and loss must be 1-d of one length, got {confidence.shape}, "
                         f"{loss.shape}")
    if not len(confidence):
        return np.zeros(0), np.zeros(0), np.zeros(0)
    order = np.argsort(-confidence, kind="stable")
    sorted_confidence = confidence[order]
    cumulative_loss = np.cumsum(loss[order])
    # The last index of each run of equal confidences: ties are covered together.
    last = np.flatnonzero(np.append(sorted_confidence[1:] != sorted_confidence[:-1], True))
    covered = last + 1
    return sorted_confidence[last], covered / len(confidence), cumulative_loss[last] / covered


def aurc(confidence: np.ndarray, loss: np.ndarray) -> float:
    """Area under the risk–coverage curve (step function; lower is better; ties handled as one step)."""
    _, cov, risk = risk_coverage(confidence, loss)
    if not len(cov):
        return float("nan")
    return float(np.sum(risk * np.diff(np.concatenate([[0.0], cov]))))


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE over `bins` equal-width confidence bins on [0, 1] (confidence 1.0 falls in the last bin)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if not len(confidence):
        return float("nan")
    index = np.clip((confidence * bins).astype(np.int64), 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    gap = np.abs(np.bincount(index, weights=correct, minlength=bins)
                 - np.bincount(index, weights=confidence, minlength=bins))
    return float(gap.sum() / count.sum())


def level_ece(level_ids: np.ndarray, level_confidences: np.ndarray, true_ids: np.ndarray,
              table: AncestorTable, bins: int = ECE_BINS) -> list[float]:
    """Per-level ECE of the decoded path's confidences.

    At level k, the items are labelled products of true depth ≥ k whose decoded path reaches level k;
    "correct" means the decoded level-k node is the label's level-k ancestor.
    """
    true = table.path_of(true_ids)
    result = []
    for k in range(table.max_depth):
        if k >= level_ids.shape[1]:
            result.append(float("nan"))
            continue
        eligible = (true[:, k] != NONE) & (level_ids[:, k] != NONE)
        result.append(expected_calibration_error(level_confidences[eligible, k],
                                                 level_ids[eligible, k] == true[eligible, k], bins))
    return result


def path_end(level_ids: np.ndarray, level_confidences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The deepest node of each decoded path and its confidence (-1 and 0.0 for an empty path)."""
    level_ids = np.asarray(level_ids, dtype=np.int64)
    depth = (level_ids != NONE).sum(axis=1)
    rows = np.arange(len(level_ids))
    last = np.maximum(depth - 1, 0)
    node = np.where(depth > 0, level_ids[rows, last], NONE)
    confidence = np.where(depth > 0, np.asarray(level_confidences, dtype=np.float64)[rows, last], 0.0)
    return node, confidence


def compute_metrics(predicted_ids: np.ndarray, true_ids: np.ndarray, table: AncestorTable,
                    level_ids: np.ndarray | None = None,
                    level_confidences: np.ndarray | None = None) -> dict:
    """Every metric of metrics.md for one system's predictions.

    Args:
        predicted_ids: int[N] final predictions (after thresholds and back-off; -1 = abstained).
        true_ids: int[N] labels (-1 = unlabelled).
        table: the taxonomy's AncestorTable.
        level_ids, level_confidences: [N, L] decoded path before thresholds and its confidences.
            When given, AURC ranks the decoded path's end by its confidence (loss: not exactly the
            label) over labelled products, and ECE is computed per level; otherwise both are NaN.

    Returns:
        The metrics.json keys hP, hR, hF1, exact_accuracy, coverage, level_accuracy, depth_coverage,
        leaf_coverage, leaf_precision, aurc, ece, n, n_labelled.
    """
    joined = Joined.build(predicted_ids, true_ids, table)
    h_precision, h_recall, h_f1 = hierarchical_prf(joined)
    if level_ids is not None and level_confidences is not None:
        level_ids = np.asarray(level_ids, dtype=np.int64)
        level_confidences = np.asarray(level_confidences, dtype=np.float64)
        end, end_confidence = path_end(level_ids, level_confidences)
        labelled = joined.labelled
        wrong = end[labelled] != np.asarray(true_ids, dtype=np.int64)[labelled]
        area = aurc(end_confidence[labelled], wrong)
        ece = level_ece(level_ids, level_confidences, true_ids, table)
    else:
        area, ece = float("nan"), [float("nan")] * table.max_depth
    return {
        "hP": h_precision,
        "hR": h_recall,
        "hF1": h_f1,
        "exact_accuracy": exact_accuracy(joined),
        "coverage": coverage(joined),
        "level_accuracy": level_accuracy(joined),
        "depth_coverage": depth_coverage(joined),
        "leaf_coverage": leaf_coverage(joined),
        "leaf_precision": leaf_precision(joined, table.is_leaf(predicted_ids)),
        "aurc": area,
        "ece": ece,
        "n": int(len(joined.predicted_depth)),
        "n_labelled": int(joined.labelled.sum()),
    }
