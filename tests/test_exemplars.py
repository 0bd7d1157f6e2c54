"""The exemplar memory (linnet_core.exemplars) and the store folds of cross-fitting."""

from __future__ import annotations

import numpy as np
import pytest

from linnet_core.exemplars import Exemplars, ExemplarsError, bound, build_exemplars
from linnet_core.taxonomy import Taxonomy
from linnet_core.training_data import store_folds


def test_memory_keeps_labelled_rows_unit_vectors_and_store_factors(tiny: Taxonomy, tmp_path) -> None:
    vectors = np.array([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0], [5.0, 5.0]], np.float32)
    # Class indexes per level of the tiny taxonomy: Dogs (0, 0, 0), Toys (1, -1, -1), unlabelled.
    labels = np.array([[0, 0, 0, -1], [1, -1, -1, -1], [-1, -1, -1, -1], [0, 0, 0, -1]])
    stores = ["big", "small", "big", "big"]
    memory = build_exemplars(vectors, labels, stores, tiny, store_cap=1.0)
    assert memory.labels.tolist() == [[0, 0, 0], [1, -1, -1], [0, 0, 0]]
    np.testing.assert_allclose(np.linalg.norm(memory.vectors, axis=1), 1.0, rtol=1e-6)
    # "big" keeps 2 labelled rows: with a cap of 1 product each weighs 1/2; "small" weighs 1.
    np.testing.assert_allclose(memory.weights, [1 / 2, 1.0, 1 / 2])
    uncapped = build_exemplars(vectors, labels, stores, tiny, store_cap=None)
    np.testing.assert_array_equal(uncapped.weights, [1.0, 1.0, 1.0])
    memory.save(tmp_path / "exemplars.npz")
    loaded = Exemplars.load(tmp_path / "exemplars.npz")
    np.testing.assert_array_equal(loaded.vectors, memory.vectors)
    np.testing.assert_array_equal(loaded.labels, memory.labels)
    assert loaded.taxonomy_fingerprint == tiny.fingerprint


def test_memory_refuses_other_taxonomies_and_other_files(tiny: Taxonomy, gpt: Taxonomy, tmp_path) -> None:
    beyond_level_2 = np.array([[0, 5, -1], [1, -1, -1]])  # level 2 of the tiny taxonomy has 4 classes
    with pytest.raises(ExemplarsError):
        build_exemplars(np.eye(2, dtype=np.float32), beyond_level_2, ["a", "b"], tiny, 150)
    memory = build_exemplars(np.eye(2, dtype=np.float32), np.array([[0, 0, 0], [1, -1, -1]]), ["a", "b"],
                             tiny, 150)
    with pytest.raises(ExemplarsError, match="do not index"):
        memory.check(gpt)
    with pytest.raises(ExemplarsError, match="at least one"):
        build_exemplars(np.eye(2, dtype=np.float32), np.full((2, 3), -1), ["a", "b"], tiny, 150)
    (tmp_path / "other.npz").write_bytes(b"not an npz")
    with pytest.raises(ExemplarsError, match="not an exemplar memory"):
        Exemplars.load(tmp_path / "other.npz")


def test_store_folds_keep_stores_whole_and_are_stable() -> None:
    stores = np.array([f"store-{i % 40}" for i in range(400)], dtype=object)
    folds = store_folds(stores, 5)
    assert set(folds.tolist()) == set(range(5))
    for store in np.unique(stores):
        assert len(set(folds[stores == store].tolist())) == 1
    np.testing.assert_array_equal(folds, store_folds(stores[::-1], 5)[::-1])


def test_bound_caps_per_store_and_class_and_keeps_each_groups_weight() -> None:
    # Class A: store s1 has 4 rows, s2 has 1, s3 has 2; class B: s1 has 1.
    labels = np.array([[0, 1]] * 4 + [[0, 1]] + [[0, 1]] * 2 + [[2, -1]])
    stores = np.array(["s1"] * 4 + ["s2"] + ["s3"] * 2 + ["s1"])
    weights = np.array([0.5] * 4 + [1.0] + [1.0] * 2 + [0.5], np.float32)
    rows, kept = bound(labels, stores, weights, per_class=0, per_store_class=2)
    assert rows.tolist() == [0, 1, 4, 5, 6, 7]
    np.testing.assert_allclose(kept, [1.0, 1.0, 1.0, 1.0, 1.0, 0.5])  # s1's 4 rows of A weigh 2 as before
    # Per class 3, round-robin over stores: the first row of s1, s2, s3, then nothing more of A.
    rows, kept = bound(labels, stores, weights, per_class=3, per_store_class=2)
    assert rows.tolist() == [0, 4, 5, 7]
    np.testing.assert_allclose(kept, [2.0, 1.0, 2.0, 0.5])
    rows, kept = bound(labels, stores, weights, per_class=0, per_store_class=0)
    assert rows.tolist() == list(range(8)) and np.array_equal(kept, weights)


def test_bounded_memory_is_smaller_and_weighs_stores_as_brute_force(tiny: Taxonomy) -> None:
    rng = np.random.default_rng(0)
    labels = np.array([[0, 0, 0]] * 30 + [[1, -1, -1]] * 10)
    stores = [f"s{i % 3}" for i in range(40)]
    vectors = rng.normal(size=(40, 4)).astype(np.float32)
    brute = build_exemplars(vectors, labels, stores, tiny, store_cap=5.0)
    bounded = build_exemplars(vectors, labels, stores, tiny, store_cap=5.0, per_class=4, per_store_class=2)
    assert len(bounded.weights) == 4 + 4 and len(brute.weights) == 40
    # Every store keeps at least one row of each class here, so each class weighs what it weighed.
    for klass in (0, 1):
        assert bounded.weights[bounded.labels[:, 0] == klass].sum() == pytest.approx(
            brute.weights[brute.labels[:, 0] == klass].sum(), rel=1e-6)
