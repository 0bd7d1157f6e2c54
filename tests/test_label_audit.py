"""The label audit's ranking (confident thresholds, parting level, suggestion, distance, store × branch)
and the seeded label flips that measure it, on hand-made paths over the tiny taxonomy."""

from __future__ import annotations

import numpy as np
import pytest

from linnet_core import label_audit, label_noise
from linnet_core.features import label_feature

N = -1
# Tiny taxonomy: 1 Animals > 2 Pets > {3 Dogs, 4 Cats}, 1 > 5 Farm; 10 Toys > 11 Dolls, 10 > 12 Puzzles > 13.
GIVEN = np.array([[1, 2, 3], [1, 2, 3], [10, 11, N], [1, 5, N], [10, 12, N]])
GIVEN_P = np.array([[0.9, 0.8, 0.6], [0.7, 0.6, 0.2], [0.4, 0.3, 0], [0.6, 0.5, 0], [0.3, 0.2, 0]])
DECODED = np.array([[1, 2, 3], [1, 2, 4], [1, 2, 4], [1, 2, 3], [1, 2, 3]])
DECODED_P = np.array([[0.9, 0.8, 0.6], [0.7, 0.6, 0.35], [0.85, 0.75, 0.5], [0.6, 0.55, 0.45],
                      [0.9, 0.65, 0.6]])
STORES = np.array(["s1", "s1", "s2", "s1", "s2"])


def test_confident_thresholds_are_the_mean_probability_of_each_class_labels():
    thresholds = label_audit.confident_thresholds(GIVEN, GIVEN_P)
    assert thresholds.by_node[0] == pytest.approx({1: (0.9 + 0.7 + 0.6) / 3, 10: (0.4 + 0.3) / 2})
    assert thresholds.by_node[1] == pytest.approx({2: 0.7, 5: 0.5, 11: 0.3, 12: 0.2})
    assert thresholds.by_node[2] == pytest.approx({3: 0.4})
    # A node nobody is labelled with (Cats) takes the level's mean; -1 has none.
    assert thresholds.of(2, np.array([4, 3, N])) == pytest.approx([0.4, 0.4, np.nan], nan_ok=True)
    with pytest.raises(ValueError, match="differ"):
        label_audit.confident_thresholds(GIVEN, GIVEN_P[:, :2])


def test_audit_flags_where_the_decoded_node_clears_its_threshold_at_the_parting_level():
    result = label_audit.audit(GIVEN, GIVEN_P, DECODED, DECODED_P)
    assert result.level.tolist() == [0, 3, 1, 2, 1]
    # 1: Cats 0.35 < 0.4; 3: Pets 0.55 < 0.7 (its labels' mean); 2 and 4: Animals 0.85 / 0.9 >= 0.733.
    assert result.flagged.tolist() == [False, False, True, False, True]
    # 2 runs down to Cats (Pets 0.75 >= 0.7, Cats 0.5 >= 0.4); 4 stops at Animals (Pets 0.65 < 0.7).
    assert result.suggested_id.tolist() == [N, N, 4, N, 1]
    assert result.distance.tolist() == [0, 0, 2 + 3, 0, 2 + 1]
    assert result.score[[2, 4]] == pytest.approx([0.85 - 0.4, 0.9 - 0.3])
    assert np.isnan(result.score[[0, 1, 3]]).all()
    assert result.threshold[2] == pytest.approx((0.9 + 0.7 + 0.6) / 3)
    # A margin cut keeps only the label the model beats by at least 0.5.
    assert label_audit.audit(GIVEN, GIVEN_P, DECODED, DECODED_P, min_margin=0.5).flagged.tolist() == [
        False, False, False, False, True]


def test_unlabelled_and_shallower_paths_are_never_flagged():
    given = np.array([[N, N, N], [1, 2, N]])
    decoded = np.array([[1, 2, 3], [1, 2, 3]])
    result = label_audit.audit(given, np.array([[0, 0, 0], [0.2, 0.1, 0]]), decoded,
                               np.array([[0.9, 0.9, 0.9], [0.99, 0.99, 0.99]]))
    assert result.level.tolist() == [0, 0] and not result.flagged.any()
    with pytest.raises(ValueError, match="shape"):
        label_audit.audit(given, given, decoded[:1], decoded[:1])


def test_tree_distance_counts_edges_through_the_deepest_common_ancestor():
    a = np.array([[1, 2, 3], [1, 2, 3], [1, 2, 3], [10, N, N], [N, N, N]])
    b = np.array([[1, 2, 3], [1, 2, 4], [1, 5, N], [1, 2, N], [1, N, N]])
    assert label_audit.tree_distance(a, b).tolist() == [0, 2, 3, 3, 1]


def test_review_rows_rank_by_score_and_say_why(tiny):
    result = label_audit.audit(GIVEN, GIVEN_P, DECODED, DECODED_P)
    rows = label_audit.review_rows(result, np.array(["a", "b", "c", "d", "e"]), STORES,
                                   np.array([3, 3, 11, 5, 12]), tiny)
    assert [r["product_id"] for r in rows] == ["e", "c"]
    assert set(rows[0]) == set(label_audit.REVIEW_COLUMNS)
    assert rows[0]["given_path"] == "Toys > Puzzles" and rows[0]["suggested_path"] == "Animals"
    assert rows[1]["suggested_path"] == "Animals > Pets > Cats" and rows[1]["level"] == 1
    assert "'Toys' p=0.40" in rows[1]["evidence"] and "'Animals' p=0.85" in rows[1]["evidence"]


def test_store_branches_call_a_store_systematic_when_most_of_its_branch_is_flagged():
    result = label_audit.audit(GIVEN, GIVEN_P, DECODED, DECODED_P)
    table = label_audit.store_branches(STORES, GIVEN, result, min_products=2)
    first = table[0]
    assert (first.store, first.branch, first.products, first.flagged) == ("s2", 10, 2, 2)
    assert first.flagged_level1 == 2
    assert first.suggested_branch == 1 and first.suggested_share == 1.0 and first.systematic
    second = table[1]
    assert (second.store, second.branch, second.products, second.flagged) == ("s1", 1, 3, 0)
    assert not second.systematic and second.suggested_branch == N
    # Too few labels: one flagged product does not make a store systematic.
    assert not label_audit.store_branches(STORES, GIVEN, result, min_products=3)[0].systematic


def test_example_factors_down_weight_the_flagged_products_only():
    factors = label_audit.example_factors(np.array(["a", "b", "c"]), ["c", "x"], 0.25)
    assert factors.tolist() == [1.0, 1.0, 0.25] and factors.dtype == np.float32
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        label_audit.example_factors(["a"], ["a"], 1.5)


def test_injected_flips_keep_depth_and_go_to_a_sibling_or_another_branch(gpt):
    rng = np.random.default_rng(1)
    deep = [node.id for node in gpt if node.depth >= 3]
    gpt_id = np.array(rng.choice(deep, 400).tolist() + [1, 166], np.int64)  # two level-1 labels
    flips = label_noise.inject_flips(gpt_id, gpt, 0.1, 0.05, seed=3)
    assert (flips.kind == label_noise.SIBLING).sum() == 40
    assert (flips.kind == label_noise.OTHER_BRANCH).sum() == 20
    assert len(set(flips.rows.tolist())) == 60 and (flips.original == gpt_id[flips.rows]).all()
    unflipped = np.setdiff1d(np.arange(len(gpt_id)), flips.rows)
    assert (flips.gpt_id[unflipped] == gpt_id[unflipped]).all()
    for row, kind in zip(flips.rows, flips.kind, strict=True):
        before, after = gpt.node(int(gpt_id[row])), gpt.node(int(flips.gpt_id[row]))
        assert before.id != after.id and before.depth == after.depth
        if kind == label_noise.SIBLING:
            assert before.parent == after.parent
        else:
            assert before.path[0] != after.path[0]
    again = label_noise.inject_flips(gpt_id, gpt, 0.1, 0.05, seed=3)
    assert (again.gpt_id == flips.gpt_id).all()
    assert (label_noise.inject_flips(gpt_id, gpt, 0.1, 0.05, seed=4).gpt_id != flips.gpt_id).any()
    with pytest.raises(ValueError, match="rates"):
        label_noise.inject_flips(gpt_id, gpt, 0.7, 0.5)


def test_relabelled_arrays_carry_the_new_labels_per_level(tiny):
    arrays = {"gpt_id": np.array([3, 11]), "weight_level_1": np.array([1.0, 2.0])}
    out = label_noise.relabelled(arrays, np.array([4, 13]), tiny)
    assert out["gpt_id"].tolist() == [4, 13] and out["weight_level_1"].tolist() == [1.0, 2.0]
    assert [out[label_feature(k)].tolist() for k in (1, 2, 3)] == [
        [tiny.level_index(1), tiny.level_index(10)], [tiny.level_index(2), tiny.level_index(12)],
        [tiny.level_index(4), tiny.level_index(13)]]


def test_detection_counts_found_flips_per_kind_and_false_flags():
    flips = label_noise.Flips(np.array([4, 3, 12, 3]), np.array([0, 2]),
                              np.array([label_noise.SIBLING, label_noise.OTHER_BRANCH], dtype=object),
                              np.array([3, 11]))
    product_id = np.array(["a", "b", "c", "d"])
    row_of = {"d": 0, "c": 1, "b": 2, "a": 3}  # the audit's own row order
    flagged = np.array([True, True, False, True])  # d (not flipped), c (branch flip), a (sibling flip)
    suggested = np.array([5, 11, N, 4])
    found = label_noise.detection(flagged, suggested, row_of, product_id, flips)
    assert found["sibling"] == {"injected": 1, "found": 1, "recall": 1.0, "precision": 0.5, "restored": 0}
    assert found["other_branch"] == {"injected": 1, "found": 1, "recall": 1.0, "precision": 0.5,
                                     "restored": 1}
    assert found["all"]["precision"] == pytest.approx(2 / 3)
    assert found["flagged"] == 3 and found["flagged_not_injected"] == 1 and found["audited"] == 4
