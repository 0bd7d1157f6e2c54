"""Merchant context: leave-one-out store aggregates, the Beam stage and its stored tables, the model's use."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from linnet_core.calibration.thresholds import FirstPass, Thresholds, load_thresholds, save_thresholds
from linnet_core.features import IMAGE_DIM, TEXT_DIM
from linnet_core.model.export import CALIBRATION_JSON, export_inference_model, read_model_json
from linnet_core.model.predictor import Predictor
from linnet_core.store_context import ContextLayout, StoreTable, leave_one_out, store_contexts
from linnet_core.taxonomy import Taxonomy
from pipelines.publish import CURRENT, current_version
from pipelines.store_context import (
    MEMBERS,
    STORE_CONTEXT,
    STORES,
    StoreContext,
    SumContributions,
    read_store_table,
)


def test_leave_one_out_is_the_mean_of_the_other_products_of_the_store() -> None:
    own = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.2, 0.8]], np.float32)
    context = store_contexts(own, np.array(["s", "s", "s", "t"], dtype=object))
    np.testing.assert_allclose(context[0], [0.25, 0.75])  # mean of rows 1 and 2
    np.testing.assert_allclose(context[2], [0.5, 0.5])
    np.testing.assert_allclose(context[3], [0.0, 0.0])  # a store of one gives no context
    # The same from a stored aggregate: sums and counts including the product itself.
    sums = own[:3].sum(0)[None].repeat(3, 0)
    np.testing.assert_allclose(leave_one_out(sums, np.array([3, 3, 3]), own[:3]), context[:3], atol=1e-6)
    order = np.array([3, 1, 0, 2])  # aggregation does not depend on row order
    np.testing.assert_allclose(store_contexts(own[order], np.array(["t", "s", "s", "s"], dtype=object)),
                               context[order])


def test_store_table_contexts_are_a_batch_run_against_the_table() -> None:
    rng = np.random.default_rng(0)
    own = rng.random((6, 3))
    stores = np.array(["s", "s", "s", "s", "t", "t"], dtype=object)
    everyone = store_contexts(own, stores)
    # Without a table, the products given are the whole batch: store_contexts over them.
    np.testing.assert_allclose(StoreTable().contexts(list("abcdef"), list(stores), own), everyone, atol=1e-6)
    # A table holding all six: scoring two of them again, unchanged, gives them their batch contexts ...
    sums = {store: own[stores == store].sum(0) for store in ("s", "t")}
    table = StoreTable(sums, {"s": 4, "t": 2}, {pid: (store, own[i]) for i, (pid, store) in
                                                 enumerate(zip("abcdef", stores, strict=True))})
    np.testing.assert_allclose(table.contexts(["b", "e"], ["s", "t"], own[[1, 4]]), everyone[[1, 4]],
                               atol=1e-6)
    # A product alone in its batch: its own contribution cancels out, so the service may pass zeros.
    np.testing.assert_allclose(table.contexts(["b"], ["s"], np.zeros((1, 3))), everyone[[1]], atol=1e-6)
    # ... a changed product replaces its stored row, and a new product or one without a store joins none.
    changed = own.copy()
    changed[1] = rng.random(3)
    online = table.contexts(["b", "g", "h"], ["s", "s", None], np.stack([changed[1], own[0], own[0]]))
    batch = store_contexts(np.concatenate([changed[:4], own[:1]]), ["s"] * 5)
    np.testing.assert_allclose(online[:2], batch[[1, 4]], atol=1e-6)
    assert not online[2].any()


def test_layout_places_level_one_then_level_two() -> None:
    layout = ContextLayout.of([21, 192, 1349])
    assert layout.width == 213 and layout.offsets == (0, 21)
    parts = layout.split(np.arange(2 * 213, dtype=np.float32).reshape(2, 213))
    assert [p.shape for p in parts] == [(2, 21), (2, 192)] and parts[1][0, 0] == 21


def test_sum_contributions_combines_per_store_in_bounded_state() -> None:
    combine = SumContributions()
    accumulators = [combine.add_input(combine.create_accumulator(), np.ones(3)) for _ in range(4)]
    total, count = combine.extract_output(combine.merge_accumulators(accumulators))
    assert count == 4 and total.tolist() == [4.0, 4.0, 4.0]
    with TestPipeline() as pipeline:
        sums = (pipeline | beam.Create([("s", np.array([1.0, 0.0])), ("s", np.array([0.0, 2.0])),
                                        ("t", np.array([3.0, 3.0]))])
                | beam.CombinePerKey(SumContributions())
                | beam.MapTuple(lambda store, acc: (store, acc[0].tolist(), acc[1])))
        assert_that(sums, equal_to([("s", [1.0, 2.0], 2), ("t", [3.0, 3.0], 1)]))


def _embedded(product_id: str, store: str, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    text, title = rng.normal(size=(2, TEXT_DIM)).astype(np.float32)
    return {"product_id": product_id, "store": store, "text_embedding": text / np.linalg.norm(text),
            "title_embedding": title / np.linalg.norm(title),
            "image_embedding": np.zeros(IMAGE_DIM, np.float32), "image_present": 0.0}


def _inputs(records: list[dict]) -> dict[str, np.ndarray]:
    return {name: np.stack([r[name] for r in records]) for name in
            ("text_embedding", "title_embedding", "image_embedding", "image_present")}


def _contexts_close_to(expected: dict[str, np.ndarray]):
    def check(actual: list[tuple[str, list[float]]]) -> None:
        got = dict(actual)
        assert sorted(got) == sorted(expected)
        for product_id, context in expected.items():
            np.testing.assert_allclose(got[product_id], context, atol=1e-6, err_msg=product_id)
    return check


def _run(model_dir: Path, records: list[dict], run_id: str, directory: Path | None,
         expected: dict[str, np.ndarray]) -> None:
    """Run the stage on `records` and check every product's store context."""
    width = read_model_json(model_dir)["store_context_width"]
    with TestPipeline() as pipeline:
        outputs = (pipeline | beam.Create(records)
                   | StoreContext(str(model_dir), width, run_id, str(directory) if directory else None))
        contexts = outputs.records | beam.Map(
            lambda r: (r["product_id"], np.asarray(r[STORE_CONTEXT]).tolist()))
        assert_that(contexts, _contexts_close_to(expected), label="CheckContexts")
        assert_that(outputs.dead_letter, equal_to([]), label="NoDeadLetters")


def test_store_context_stage_and_incremental_table(model_dir: Path, tmp_path: Path) -> None:
    predictor = Predictor(model_dir)
    first = [_embedded("a", "s", 1), _embedded("b", "s", 2), _embedded("c", "s", 3), _embedded("d", "t", 4)]
    own = predictor.store_evidence(_inputs(first))
    assert own.shape == (4, predictor.store_context_width) and (own > 0).sum(axis=1).max() <= 10
    directory = tmp_path / "store_context"
    _run(model_dir, first, "run-1", directory, {
        "a": (own[1] + own[2]) / 2, "b": (own[0] + own[2]) / 2, "c": (own[0] + own[1]) / 2,
        "d": np.zeros_like(own[3])})  # d is alone in its store: no context
    assert current_version(str(directory)) == "run-1" and (directory / CURRENT).read_text() == "run-1"
    members = pq.read_table(directory / "versions" / "run-1" / MEMBERS).to_pylist()
    assert sorted(m["product_id"] for m in members) == ["a", "b", "c", "d"]
    stores = {row["store"]: row
              for row in pq.read_table(directory / "versions" / "run-1" / STORES).to_pylist()}
    assert stores["s"]["products"] == 3 and stores["t"]["products"] == 1

    # A nightly run scores one changed product of store s and one new one: both see the whole store.
    second = [_embedded("b", "s", 20), _embedded("e", "s", 5)]
    new_own = predictor.store_evidence(_inputs(second))
    expected = {"b": (own[0] + own[2] + new_own[1]) / 3, "e": (own[0] + own[2] + new_own[0]) / 3}
    # The online service's view of the run-1 table gives them the context the batch run-2 gives them.
    table = read_store_table(str(directory), predictor.store_context_width)
    assert table.version == "run-1" and table.counts == {"s": 3, "t": 1}
    online = table.contexts(["b", "e"], ["s", "s"], new_own)
    np.testing.assert_allclose(online, np.stack([expected["b"], expected["e"]]), atol=1e-6)
    _run(model_dir, second, "run-2", directory, expected)
    assert current_version(str(directory)) == "run-2"
    members = {m["product_id"]: m
               for m in pq.read_table(directory / "versions" / "run-2" / MEMBERS).to_pylist()}
    assert sorted(members) == ["a", "b", "c", "d", "e"] and members["b"]["run_id"] == "run-2"
    assert members["a"]["run_id"] == "run-2"  # the new version carries every member forward
    stores = {row["store"]: row
              for row in pq.read_table(directory / "versions" / "run-2" / STORES).to_pylist()}
    assert stores["s"]["products"] == 4 and stores["t"]["products"] == 1


def test_the_model_follows_a_weighted_store_context(model_dir: Path, tmp_path: Path, gpt: Taxonomy) -> None:
    import shutil

    tuned_dir = tmp_path / "model"
    shutil.copytree(model_dir, tuned_dir)
    base = load_thresholds(tuned_dir / CALIBRATION_JSON)
    weights = {"store_context": (200.0,) + (0.0,) * 6}
    tuned = Thresholds("manual-store", base.levels, base.temperatures, evidence_weights=weights,
                       first_pass=FirstPass(base.temperatures))
    save_thresholds(tuned, tmp_path / "t.json")
    export_inference_model(tuned_dir, tmp_path / "t.json")
    predictor = Predictor(tuned_dir, gpt)
    records = [_embedded(f"p{i}", "s", i) for i in range(6)]
    inputs = _inputs(records)
    # A store whose products are all Toys & Games (1239), then one of Animals & Pet Supplies (1): the
    # same six products follow whichever context they are given.
    for branch in (1239, 1):
        context = np.zeros((6, predictor.store_context_width), np.float32)
        context[:, gpt.level_ids(1).index(branch)] = 1.0
        outputs = predictor.predict(inputs, thresholds=[0.0] * 7, store_context=context)
        assert (outputs["level_ids"][:, 0] == branch).all(), branch
    in_stores = predictor.predict_in_stores(inputs, np.array(["s"] * 6), thresholds=[0.0] * 7)
    own = predictor.store_evidence(inputs)
    again = predictor.predict(inputs, thresholds=[0.0] * 7, store_context=store_contexts(own, ["s"] * 6))
    np.testing.assert_array_equal(in_stores["level_ids"], again["level_ids"])
    with pytest.raises(ValueError, match="store_context must have shape"):
        predictor.predict(inputs, store_context=context[:, :5])
