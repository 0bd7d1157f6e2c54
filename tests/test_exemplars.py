"""The exemplar memory (linnet_core.exemplars) and the store folds of cross-fitting."""

from __future__ import annotations

import numpy as np
import pytest

from linnet_core.exemplars import Exemplars, ExemplarsError, build_exemplars
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
