"""Hierarchical metrics on hand-computed cases over the tiny taxonomy (see conftest.TINY_TAXONOMY)."""

from __future__ import annotations

import numpy as np
import pytest

from linnet_core import metrics
from linnet_core.taxonomy import TaxonomyError

# (predicted, true): exact, correct back-off, wrong sibling leaf, abstained, wrong branch at level 2,
# unlabelled but predicted, unlabelled and abstained, deeper than the (internal) label.
PREDICTED = np.array([3, 2, 4, -1, 11, 5, -1, 13])
TRUE = np.array([3, 3, 3, 13, 13, -1, -1, 12])


@pytest.fixture
def table(tiny):
    return metrics.AncestorTable(tiny)


def test_ancestor_table_rows_and_depths(table):
    assert table.path_of(np.array([13, -1, 5])).tolist() == [[10, 12, 13], [-1, -1, -1], [1, 5, -1]]
    assert table.depth_of(np.array([3, 2, 1, -1])).tolist() == [3, 2, 1, 0]
    assert table.is_leaf(np.array([3, 2, 11, -1])).tolist() == [True, False, True, False]
    with pytest.raises(TaxonomyError, match="node id 99"):
        table.rows(np.array([3, 99]))


def test_hand_computed_case(table):
    m = metrics.compute_metrics(PREDICTED, TRUE, table)
    # Σ|α∩β| = 3+2+2+0+1+2 = 10, Σ|α| = 3+2+3+0+2+3 = 13, Σ|β| = 3+3+3+3+3+2 = 17.
    assert m["hP"] == pytest.approx(10 / 13)
    assert m["hR"] == pytest.approx(10 / 17)
    assert m["hF1"] == pytest.approx(2 / 3)
    assert m["exact_accuracy"] == pytest.approx(1 / 6)
    assert m["level_accuracy"] == pytest.approx([5 / 6, 4 / 6, 1 / 5])
    assert m["coverage"] == pytest.approx(6 / 8)
    assert m["depth_coverage"] == pytest.approx([6 / 8, 6 / 8, 3 / 8])
    assert m["leaf_coverage"] == pytest.approx(3 / 6)
    # Predicted to a leaf or to the true depth: products 0, 2, 4 (Dolls is a leaf), 7; only 0 exact.
    assert m["leaf_precision"] == pytest.approx(1 / 4)
    assert (m["n"], m["n_labelled"]) == (8, 6)
    assert np.isnan(m["aurc"]) and all(np.isnan(m["ece"]))


def test_unlabelled_products_change_coverage_only(table):
    labelled = TRUE != -1
    full = metrics.compute_metrics(PREDICTED, TRUE, table)
    only = metrics.compute_metrics(PREDICTED[labelled], TRUE[labelled], table)
    for key in ("hP", "hR", "hF1", "exact_accuracy", "level_accuracy", "leaf_coverage", "leaf_precision"):
        assert full[key] == pytest.approx(only[key]), key
    assert only["coverage"] == pytest.approx(5 / 6) != full["coverage"]


def test_abstaining_everywhere_gives_zero_recall_and_f1(table):
    m = metrics.compute_metrics(np.array([-1, -1]), np.array([3, 12]), table)
    assert np.isnan(m["hP"]) and m["hR"] == 0.0 and m["hF1"] == 0.0 and m["coverage"] == 0.0


def test_risk_coverage_and_aurc():
    thresholds, cov, risk = metrics.risk_coverage(np.array([0.6, 0.9, 0.7, 0.8]), np.array([1, 0, 0, 1]))
    assert thresholds.tolist() == [0.9, 0.8, 0.7, 0.6]
    assert cov.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert risk == pytest.approx([0, 1 / 2, 1 / 3, 1 / 2])
    assert metrics.aurc(np.array([0.6, 0.9, 0.7, 0.8]), np.array([1, 0, 0, 1])) == pytest.approx(1 / 3)


def test_aurc_treats_ties_as_one_step_whatever_their_order():
    # θ=0.9 covers 2/3 at risk 1/2, θ=0.5 covers all at risk 1/3: 1/2·2/3 + 1/3·1/3 = 4/9.
    assert metrics.aurc(np.array([0.9, 0.9, 0.5]), np.array([1, 0, 0])) == pytest.approx(4 / 9)
    assert metrics.aurc(np.array([0.9, 0.9, 0.5]), np.array([0, 1, 0])) == pytest.approx(4 / 9)


def test_expected_calibration_error_hand_computed():
    # Bins: 0.95 → 14 (two items, accuracy 1/2), 0.05 → 0, 0.55 → 8: (2·0.45 + 0.05 + 0.45) / 4.
    confidence = np.array([0.95, 0.95, 0.05, 0.55])
    assert metrics.expected_calibration_error(confidence, np.array([1, 0, 0, 1])) == pytest.approx(0.35)
    assert metrics.expected_calibration_error(np.array([1.0, 1.0]), np.array([1, 1])) == 0.0
    assert np.isnan(metrics.expected_calibration_error(np.zeros(0), np.zeros(0)))


def test_decoded_paths_give_aurc_and_level_ece(table):
    level_ids = np.array([[1, 2, 3], [1, 2, 4], [10, 12, 13], [10, 11, -1]])
    confidences = np.array([[0.95, 0.9, 0.8], [0.95, 0.9, 0.6], [0.95, 0.7, 0.7], [0.55, 0.5, 0.0]])
    true = np.array([3, 3, 13, 13])
    predicted = np.array([3, 2, 12, -1])
    m = metrics.compute_metrics(predicted, true, table, level_ids, confidences)
    # Path ends ranked by confidence: 3 (0.8, right), 13 (0.7, right), 4 (0.6, wrong), 11 (0.5, wrong).
    assert m["aurc"] == pytest.approx((0 + 0 + 1 / 3 + 1 / 2) / 4)
    # Level 1: all right; bins 14 (three at 0.95) and 8 (0.55): (3·0.05 + 0.45) / 4.
    assert m["ece"][0] == pytest.approx((3 * 0.05 + 0.45) / 4)
    # Level 3: three paths reach it: 0.8 right (bin 12), 0.6 wrong (bin 9), 0.7 right (bin 10).
    assert m["ece"][2] == pytest.approx((0.2 + 0.6 + 0.3) / 3)


def test_path_end():
    ids = np.array([[1, 2, -1], [-1, -1, -1]])
    node, confidence = metrics.path_end(ids, np.array([[0.9, 0.4, 0], [0, 0, 0]]))
    assert node.tolist() == [2, -1] and confidence.tolist() == [0.4, 0.0]


def test_mismatched_shapes_are_rejected(table):
    with pytest.raises(ValueError, match="one length"):
        metrics.compute_metrics(np.array([3, 2]), np.array([3]), table)
