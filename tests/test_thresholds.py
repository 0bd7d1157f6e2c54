"""Thresholds: file format, cutting decoded paths, Clopper–Pearson bounds and precision-target tuning."""

from __future__ import annotations

import json

import numpy as np
import pytest

from linnet_core.calibration import thresholds as th


def test_file_round_trip_and_content_version(tmp_path):
    levels, temperatures = (0.5, 0.6, 0.7, 0.8, 0.9, 0.9, 1.0), (1.2,) * 7
    version = th.content_version(levels, temperatures, {772: 0.95}, 0.9)
    assert version == th.content_version(levels, temperatures, {772: 0.95}, 0.9)
    assert version != th.content_version(levels, temperatures, {772: 0.96}, 0.9)
    assert version.startswith("p0.9-")
    original = th.Thresholds(version, levels, temperatures, {772: 0.95}, target_precision=0.9)
    th.save_thresholds(original, tmp_path / "t.json")
    assert th.load_thresholds(tmp_path / "t.json") == original
    assert json.loads((tmp_path / "t.json").read_text())["overrides"] == {"772": 0.95}


def test_clopper_pearson_known_values():
    n = np.array([1, 10, 29, 100, 1000])
    # Zero errors: P(Bin(n, u) = 0) = δ  ⇒  u = 1 − δ^(1/n).
    assert th.clopper_pearson_upper(np.zeros(5), n) == pytest.approx(1 - 0.05 ** (1 / n), rel=1e-10)
    # 1 error in 20 (a textbook case): one-sided 95% upper bound 0.2161.
    assert float(th.clopper_pearson_upper(1, 20)) == pytest.approx(0.216106, abs=1e-6)
    assert th.clopper_pearson_upper(np.array([5, 0]), np.array([5, 0])).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError):
        th.clopper_pearson_upper(6, 5)


def test_select_threshold_hand_case():
    confidence = np.linspace(1.0, 0.01, 100)
    # The 30 most confident are right, the rest wrong: 0/30 → bound 0.0950 ≤ 0.1; 1/31 → 0.145.
    correct = np.arange(100) < 30
    choice = th.select_threshold(confidence, correct, target_precision=0.9)
    assert choice.threshold == confidence[29]
    assert (choice.covered, choice.errors, choice.n) == (30, 0, 100)
    assert choice.upper_bound == pytest.approx(1 - 0.05 ** (1 / 30))
    # Only 28 right: 0/28 bounds the error at 0.1013, so no threshold certifies 90%.
    closed = th.select_threshold(confidence, np.arange(100) < 28, target_precision=0.9)
    assert (closed.threshold, closed.covered) == (th.CLOSED, 0)


def test_select_threshold_is_the_smallest_certified_on_random_scores():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    confidence = np.round(rng.random(400), 2)  # ties on purpose
    correct = rng.random(400) < confidence ** 0.3
    choice = th.select_threshold(confidence, correct, target_precision=0.8)
    certified = []
    for theta in np.unique(confidence):
        covered = confidence >= theta
        k, n = int((~correct[covered]).sum()), int(covered.sum())
        if k < n and stats.beta.ppf(0.95, k + 1, n - k) <= 0.2:
            certified.append(theta)
    assert choice.threshold == min(certified)
    covered = confidence >= choice.threshold
    assert choice.covered == covered.sum() and choice.errors == (~correct[covered]).sum()


def test_select_threshold_rejects_bad_target():
    with pytest.raises(th.ThresholdsError, match="target precision"):
        th.select_threshold(np.ones(3), np.ones(3, bool), 1.0)


def test_overrides_cover_subtrees_and_cut_paths():
    paths = np.array([[10, 12, 13, -1, -1, -1, -1]] * 3 + [[1, 2, 3, -1, -1, -1, -1]])
    confidences = np.array([[0.9, 0.7, 0.6, 0, 0, 0, 0], [0.9, 0.85, 0.8, 0, 0, 0, 0],
                            [0.4, 0.3, 0.2, 0, 0, 0, 0], [0.9, 0.7, 0.6, 0, 0, 0, 0]])
    t = th.Thresholds("t", (0.5,) * 7, overrides={12: 0.8})
    assert th.effective_thresholds(paths, t)[0, :3].tolist() == [0.5, 0.8, 0.8]
    assert th.effective_thresholds(paths, t)[3, :3].tolist() == [0.5, 0.5, 0.5]
    assert th.cut_depth(paths, confidences, t).tolist() == [1, 3, 0, 3]
    assert th.cut_paths(paths, confidences, t).tolist() == [10, 13, -1, 3]
    assert th.cut_paths(paths, confidences, t, back_off=False).tolist() == [-1, 13, -1, 3]
    # The path is cut before the first node below its threshold, even if a deeper node clears its own.
    uneven = th.Thresholds("u", (0.5, 0.9, 0.1, 0.5, 0.5, 0.5, 0.5))
    assert th.cut_paths(paths[:1], confidences[:1], uneven).tolist() == [10]
    # A closed level stops even a saturated confidence (exactly 1.0 in float32).
    closed = th.Thresholds("c", (0.5, th.CLOSED) + (0.5,) * 5)
    saturated = np.ones((1, 7), np.float32)
    assert np.float32(th.CLOSED) > np.float32(1.0)
    assert th.cut_paths(paths[:1], saturated, closed).tolist() == [10]


def _synthetic_paths(n: int, rng: np.random.Generator):
    """Paths 10 > 12 > 13 whose level-2 and level-3 nodes are right exactly when confident."""
    level_ids = np.tile([10, 12, 13, -1, -1, -1, -1], (n, 1))
    confidences = np.zeros((n, 7))
    confidences[:, 0] = rng.uniform(0.6, 1.0, n)
    confidences[:, 1] = confidences[:, 0] * rng.uniform(0.3, 1.0, n)
    confidences[:, 2] = confidences[:, 1] * rng.uniform(0.5, 1.0, n)
    true = np.tile([10, 12, 13, -1, -1, -1, -1], (n, 1))
    wrong_below = confidences[:, 1] < 0.5
    true[wrong_below, 1:3] = [11, -1]
    return level_ids, confidences, true


def test_tune_per_level_with_floors():
    level_ids, confidences, true = _synthetic_paths(2000, np.random.default_rng(0))
    true[:100] = -1  # unlabelled rows are ignored
    tuned, report = th.tune(level_ids, confidences, true, 0.9, temperatures=(1.5,) * 7, floors={5605: 0.9})
    assert tuned.levels[0] == pytest.approx(confidences[100:, 0].min())  # level 1 is always right
    right_level_2 = confidences[100:, 1][confidences[100:, 1] >= 0.5]
    assert 0.45 < tuned.levels[1] <= right_level_2.min()
    assert tuned.levels[3:] == (th.CLOSED,) * 4  # nothing decoded there: nothing certified
    assert tuned.overrides == {5605: 0.9} and tuned.temperatures == (1.5,) * 7
    assert tuned.target_precision == 0.9 and tuned.version.startswith("p0.9-")
    assert report["n_labelled"] == 1900 and report["levels"][1]["upper_bound"] <= 0.1
    again, _ = th.tune(level_ids, confidences, true, 0.9, temperatures=(1.5,) * 7, floors={5605: 0.9})
    assert again == tuned


def test_tune_per_subtree_raises_a_bad_subtree_only():
    rng = np.random.default_rng(1)
    good_ids, good_conf, good_true = _synthetic_paths(3000, rng)
    # A small subtree whose level-2 and level-3 nodes are wrong unless level 1 is above 0.9.
    bad_ids = np.tile([1, 2, 3, -1, -1, -1, -1], (200, 1))
    bad_conf = np.tile([0.99, 0.95, 0.9, 0, 0, 0, 0], (200, 1)) * rng.uniform(0.6, 1.0, (200, 1))
    bad_true = np.tile([1, 5, -1, -1, -1, -1, -1], (200, 1))
    bad_true[bad_conf[:, 0] > 0.9, 1:3] = [2, 3]
    ids, conf, true = (np.concatenate(pair) for pair in
                       ((good_ids, bad_ids), (good_conf, bad_conf), (good_true, bad_true)))
    flat, _ = th.tune(ids, conf, true, 0.9)
    bad_correct = th.node_correctness(bad_ids, bad_true)
    covered, wrong = th._covered_nodes(bad_ids, bad_conf, bad_correct, flat)
    assert th.clopper_pearson_upper(wrong, covered) > 0.1  # level thresholds alone miss the target there
    by_subtree, report = th.tune(ids, conf, true, 0.9, per_subtree=True)
    assert by_subtree.levels == flat.levels and set(by_subtree.overrides) == {1}
    assert set(report["subtrees"]) == {"1"} and report["subtrees"]["1"]["n"] == 600
    covered, wrong = th._covered_nodes(bad_ids, bad_conf, bad_correct, by_subtree)
    assert covered > 0 and th.clopper_pearson_upper(wrong, covered) <= 0.1


def test_default_sensitive_floors_name_real_categories(gpt):
    """The package carries its floors (tuning needs no checkout)."""
    floors = th.load_floors(None, gpt)
    assert {5605, 772, 491, 780} <= set(floors) and all(0.5 <= f <= 1.0 for f in floors.values())
    assert gpt.node(491).full_path == "Health & Beauty > Health Care"


def test_floors_file_errors(tmp_path, tiny):
    bad_path = tmp_path / "floors.json"
    bad_path.write_text(json.dumps({"floors": [{"id": 2, "path": "Toys > Dolls", "floor": 0.9}]}))
    with pytest.raises(th.ThresholdsError, match="does not match"):
        th.load_floors(bad_path, tiny)
    bad_path.write_text(json.dumps({"floors": [{"id": 2, "floor": 1.5}]}))
    with pytest.raises(th.ThresholdsError, match="outside"):
        th.load_floors(bad_path)
    bad_path.write_text("[]")
    with pytest.raises(th.ThresholdsError, match="not a floors file"):
        th.load_floors(bad_path)


def test_evidence_weights_are_optional_and_named_by_the_version(tmp_path):
    levels, temperatures = (0.5,) * 7, (1.3,) * 7
    weights = {th.TEXT_PRIOR: (6.0, 2.5, 0.0, 0.0, 0.0, 0.0, 0.0), th.EXEMPLAR_SHARES: (1.0,) * 7}
    plain = th.content_version(levels, temperatures, {}, 0.9)
    # All-zero weights keep the versions files without evidence always had; non-zero weights change it.
    assert th.content_version(levels, temperatures, {}, 0.9, {th.TITLE_PRIOR: (0.0,) * 7}) == plain
    assert th.content_version(levels, temperatures, {}, 0.9, weights) != plain
    fused = th.Thresholds("v", levels, temperatures, evidence_weights=weights)
    assert fused.weights(th.TEXT_PRIOR) == weights[th.TEXT_PRIOR]
    assert fused.weights(th.TITLE_PRIOR) == (0.0,) * 7
    th.save_thresholds(fused, tmp_path / "t.json")
    assert th.load_thresholds(tmp_path / "t.json") == fused
    written = json.loads((tmp_path / "t.json").read_text())["evidence_weights"]
    assert written == {name: list(w) for name, w in weights.items()}
    (tmp_path / "old.json").write_text(json.dumps({"version": "old", "levels": list(levels)}))
    assert th.load_thresholds(tmp_path / "old.json").evidence_weights == {}
    with pytest.raises(th.ThresholdsError, match="evidence_weights"):
        th.Thresholds("v", levels, evidence_weights={th.TEXT_PRIOR: (-1.0,) + (0.0,) * 6})
    with pytest.raises(th.ThresholdsError, match="unknown evidence"):
        th.Thresholds("v", levels, evidence_weights={"gut_feeling": (1.0,) * 7})
    (tmp_path / "bad.json").write_text(json.dumps({"version": "b", "levels": list(levels),
                                                   "evidence_weights": [1, 2]}))
    with pytest.raises(th.ThresholdsError, match="not a calibration file"):
        th.load_thresholds(tmp_path / "bad.json")
    tuned, _ = th.tune(np.array([[1, 2, -1, -1, -1, -1, -1]]), np.array([[0.9, 0.8, 0, 0, 0, 0, 0]]),
                       np.array([[1, 2, -1, -1, -1, -1, -1]]), 0.5, temperatures, evidence_weights=weights)
    assert tuned.evidence_weights == weights


def test_store_bootstrap_bound_sees_errors_that_travel_together():
    # 20 stores of 20 items, 10% wrong overall: spread evenly, or all in two stores.
    rng = np.random.default_rng(3)
    confidence = rng.uniform(0.5, 1.0, 400)
    stores = np.repeat(np.arange(20), 20)
    spread = np.zeros(400, bool)
    spread[::10] = True
    clumped = np.isin(stores, [4, 11])
    order = np.argsort(-confidence, kind="stable")
    candidates = np.array([399])  # everything covered
    independent = th.clopper_pearson_upper(40, 400)
    even = th.store_bootstrap_upper(spread[order], stores[order], candidates)[0]
    clumps = th.store_bootstrap_upper(clumped[order], stores[order], candidates)[0]
    assert even < independent < clumps  # only store-clumped errors widen the bound
    again = th.store_bootstrap_upper(clumped[order], stores[order], candidates)[0]
    assert again == clumps  # seeded: the same thresholds run after run
    # A target the binomial bound certifies is refused when the errors clump in stores.
    plain = th.select_threshold(confidence, ~clumped, 0.8)
    clustered = th.select_threshold(confidence, ~clumped, 0.8, clusters=stores)
    assert plain.threshold != th.CLOSED and clustered.upper_bound >= plain.upper_bound
    assert clustered.threshold >= plain.threshold


def test_first_pass_round_trips_and_names_the_version(tmp_path):
    first = th.FirstPass((2.0,) * 7, {"exemplars": (1.5,) * 7})
    tuned = th.Thresholds("v", (0.5,) * 7, evidence_weights={"store_context": (3.0,) * 7}, first_pass=first)
    th.save_thresholds(tuned, tmp_path / "t.json")
    assert th.load_thresholds(tmp_path / "t.json") == tuned
    assert th.content_version((0.5,) * 7, (1.0,) * 7, {}, 0.7, {}, first) != th.content_version(
        (0.5,) * 7, (1.0,) * 7, {}, 0.7, {})
    with pytest.raises(th.ThresholdsError, match="no first_pass"):
        th.Thresholds("v", (0.5,) * 7, evidence_weights={"store_context": (3.0,) * 7})
    with pytest.raises(th.ThresholdsError, match="unknown evidence"):
        th.FirstPass((1.0,) * 7, {"store_context": (1.0,) * 7})
