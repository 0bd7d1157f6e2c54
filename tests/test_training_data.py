"""Training-data logic: splits, labels, class weights, stats; and the pipeline on crafted records
(every dead-letter reason it can emit, TFRecords read back, weights from the transform_fn)."""

from __future__ import annotations

import datetime as dt
import glob
import json
import uuid
from collections import Counter
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from conftest import TINY_TAXONOMY

import schemas
from linnet_core.features import IMAGE_DIM, IMAGE_PRESENT, LEVELS, NO_LABEL, TEXT_DIM, label_feature
from linnet_core.records import Reason, RecordError, dead_letter
from linnet_core.training_data import (
    SPLITS,
    SplitConfig,
    SplitStats,
    TrainingDataError,
    WeightConfig,
    assign_split,
    choose_duplicate,
    class_weights,
    class_weights_report,
    hash_unit,
    level_labels,
    parse_store_cap,
    resolve_label,
    split_key,
    store_factors,
    to_example,
)
from pipelines import build_training_data
from pipelines.dead_letters import DEAD_LETTER, Routed
from pipelines.embed import EMBEDDED

FAIL_TITLE = "unembeddable"
NAN_TITLE = "nan vector"


# -- splits ---------------------------------------------------------------------------------------
def test_hash_unit_is_stable_across_runs_and_machines():
    # sha256-based: this value must never change, or re-runs would move stores between splits.
    assert hash_unit("store-a") == 0.10062587627858094
    assert all(0.0 <= hash_unit(f"k{i}") < 1.0 for i in range(1000))


def test_split_follows_the_store_and_the_fractions():
    config = SplitConfig((0.6, 0.3, 0.1))
    first = assign_split({"store": "acme", "product_id": "1", "title": "a"}, config)
    assert all(assign_split({"store": "acme", "product_id": str(i)}, config) == first for i in range(50))
    counts = Counter(assign_split({"store": f"store-{i}"}, config) for i in range(20_000))
    for name, fraction in zip(SPLITS, config.fractions, strict=True):
        assert abs(counts[name] / 20_000 - fraction) < 0.015


def test_split_fallbacks_and_empty_fractions():
    assert split_key({"store": None, "product_id": "p1"}, ("store",)) == "p1"
    assert split_key({"store": "", "vendor": "v", "product_id": "p1"}, ("store", "vendor")) == "v"
    no_validation = SplitConfig((0.5, 0.0, 0.5))
    assert {assign_split({"store": f"s{i}"}, no_validation) for i in range(500)} == {"train", "calibration"}
    by_record = SplitConfig(split_by=("product_id",))
    stores = {assign_split({"store": "one", "product_id": f"p{i}"}, by_record) for i in range(200)}
    assert stores == set(SPLITS)


@pytest.mark.parametrize("fractions, split_by", [((0.5, 0.5), ("store",)), ((0.8, 0.3, -0.1), ("store",)),
                                                 ((0.7, 0.2, 0.2), ("store",)), ((1, 0, 0), ()),
                                                 ((1, 0, 0), ("stores",))])
def test_split_config_rejects_bad_settings(fractions, split_by):
    with pytest.raises(TrainingDataError):
        SplitConfig(fractions, split_by)


# -- labels ---------------------------------------------------------------------------------------
def test_resolve_label_accepts_id_path_and_path_only(tiny):
    assert resolve_label({"gpt_id": 13, "gpt_path": "toys > puzzles > JIGSAW"}, tiny).id == 13
    assert resolve_label({"gpt_id": 13}, tiny).id == 13
    assert resolve_label({"gpt_path": "Animals > Farm"}, tiny).id == 5


@pytest.mark.parametrize("record, reason", [
    ({"gpt_id": 999}, Reason.UNKNOWN_LABEL),
    ({"gpt_id": None, "gpt_path": None}, Reason.UNKNOWN_LABEL),
    ({"gpt_path": "Animals > Unicorns"}, Reason.UNKNOWN_LABEL),
    ({"gpt_id": 3, "gpt_path": "Toys > Dolls"}, Reason.LABEL_PATH_MISMATCH),
])
def test_resolve_label_rejects_with_reason(tiny, record, reason):
    with pytest.raises(RecordError) as raised:
        resolve_label(record, tiny)
    assert raised.value.reason is reason


def test_level_labels_are_per_level_class_indexes(tiny, gpt):
    # tiny level 1 = [1, 10], level 2 = [2, 5, 11, 12], level 3 = [3, 4, 13] (ascending ids).
    assert level_labels(13, tiny) == [1, 3, 2, NO_LABEL, NO_LABEL, NO_LABEL, NO_LABEL]
    assert level_labels(5, tiny) == [0, 1] + [NO_LABEL] * 5
    shampoo = gpt.by_path("Health & Beauty > Personal Care > Hair Care > Shampoo & Conditioner > Shampoo")
    labels = level_labels(shampoo.id, gpt)
    assert [gpt.node_at(level, index).id for level, index in enumerate(labels[:5], start=1)] == [
        node.id for node in gpt.ancestors(shampoo.id, include_self=True)]
    assert labels[5:] == [NO_LABEL, NO_LABEL]


def _embedded(product_id: str, store: str, gpt_id: int | None, **extra) -> dict:
    rng = np.random.default_rng(int(hash_unit(product_id) * 2**32))
    text, title = rng.standard_normal((2, TEXT_DIM)).astype(np.float32)
    return {"product_id": product_id, "store": store, "title": f"product {product_id}", "gpt_id": gpt_id,
            "gpt_path": None, "lang": "en", "text_embedding": text / np.linalg.norm(text),
            "title_embedding": title / np.linalg.norm(title),
            "image_embedding": np.zeros(IMAGE_DIM, np.float32), "image_present": 0.0, **extra}


def test_to_example_has_exactly_the_raw_features(tiny):
    example = to_example(_embedded("p1", "s1", 13, lang=None), tiny)
    spec = schemas.load("training_features")
    expected = {entry["name"].format(level=level) for entry in spec["raw"]
                for level in (range(1, LEVELS + 1) if entry.get("per_level") else [0])}
    assert set(example) == expected
    assert example["lang"] == "und" and example["gpt_id"] == 13 and example[label_feature(3)] == 2
    assert example["text_embedding"].dtype == np.float32


@pytest.mark.parametrize("field, value", [("text_embedding", None), ("text_embedding", np.zeros(10)),
                                          ("title_embedding", None),
                                          ("image_embedding", np.full(IMAGE_DIM, np.nan))])
def test_to_example_rejects_bad_embeddings(tiny, field, value):
    with pytest.raises(RecordError) as raised:
        to_example(_embedded("p1", "s1", 13, **{field: value}), tiny)
    assert raised.value.reason is Reason.EMBEDDING_FAILED


# -- class weights and stats ----------------------------------------------------------------------
def test_class_weights_by_hand():
    counts = np.array([0, 1, 3])  # N = 4, K_seen = 2: w = 4 / (2 (n + 1)) = [2, 1, 0.5] at power 1
    np.testing.assert_allclose(class_weights(counts, WeightConfig(1.0, 1.0, 10.0)), [2.0, 1.0, 0.5])
    np.testing.assert_allclose(class_weights(counts, WeightConfig(0.5, 1.0, 10.0)), np.sqrt([2.0, 1.0, 0.5]))
    np.testing.assert_allclose(class_weights(counts, WeightConfig(1.0, 1.0, 1.5)), [1.5, 1.0, 0.5])
    np.testing.assert_allclose(class_weights(np.zeros(3), WeightConfig()), [0.0, 0.0, 0.0])


def test_balanced_weights_give_every_seen_class_equal_total_weight():
    counts = np.array([500, 20, 3, 0, 77])
    weights = class_weights(counts, WeightConfig(power=1.0, smoothing=1e-9, cap=1e9))
    totals = (counts * weights)[counts > 0]
    np.testing.assert_allclose(totals, totals[0])
    assert (counts * weights).sum() == pytest.approx(counts.sum())


def test_class_weights_are_the_same_formula_in_tensorflow():
    import tensorflow.experimental.numpy as tnp

    counts = np.array([0, 1, 3, 40, 0, 7], np.float32)
    config = WeightConfig(0.5, 1.0, 3.0)
    graph = tf.function(lambda c: class_weights(c, config, xp=tnp))
    np.testing.assert_allclose(graph(tf.constant(counts)).numpy(), class_weights(counts, config), rtol=1e-6)


@pytest.mark.parametrize("power, smoothing, cap", [(-1, 1, 1), (1, 0, 1), (1, 1, 0)])
def test_weight_config_rejects_bad_settings(power, smoothing, cap):
    with pytest.raises(TrainingDataError):
        WeightConfig(power, smoothing, cap)


def test_store_factors_by_hand():
    # cap 150: a store of 2,955 train examples weighs 150/2955 each (150 in all); 150 or fewer: 1;
    # a store absent from train (n = 0, e.g. a validation store): 1.
    counts = np.array([2955, 300, 150, 149, 1, 0])
    np.testing.assert_allclose(store_factors(counts, 150.0), [150 / 2955, 0.5, 1.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(store_factors(counts, None), np.ones(6))
    assert (counts * store_factors(counts, 150.0))[:2].tolist() == pytest.approx([150.0, 150.0])


def test_store_factors_are_the_same_formula_in_tensorflow():
    import tensorflow.experimental.numpy as tnp

    counts = np.array([0, 3, 4, 5, 6, 1000], np.int64)
    graph = tf.function(lambda c: store_factors(c, 4.0, xp=tnp))
    np.testing.assert_allclose(graph(tf.constant(counts)).numpy(), [1, 1, 1, 0.8, 4 / 6, 0.004], rtol=1e-6)


@pytest.mark.parametrize("text, cap", [("150", 150.0), ("2.5", 2.5), ("0", None), ("none", None),
                                       ("None", None), (None, None)])
def test_parse_store_cap(text, cap):
    assert parse_store_cap(text) == cap


@pytest.mark.parametrize("text", ["-1", "lots"])
def test_parse_store_cap_rejects(text):
    with pytest.raises(TrainingDataError):
        parse_store_cap(text)
    with pytest.raises(TrainingDataError):
        WeightConfig(store_cap=-1.0)


def test_split_stats_add_merge_and_report(tiny):
    first, second = SplitStats(), SplitStats()
    first.add(to_example(_embedded("a", "s1", 13), tiny)).add(to_example(_embedded("b", "s1", 5), tiny))
    second.add(to_example(_embedded("c", "s2", 13, lang="fr", image_present=1.0), tiny))
    report = first.merge(second).as_dict()
    assert report == {
        "examples": 3, "stores": 2, "classes_seen": [2, 2, 1, 0, 0, 0, 0],
        "label_coverage": [1.0, 1.0, round(2 / 3, 6), 0.0, 0.0, 0.0, 0.0],
        "languages": {"en": 2, "fr": 1}, "image_share": round(1 / 3, 6)}
    np.testing.assert_array_equal(first.count_vector(2, 4), [0, 1, 0, 2])


def test_class_weights_report_lists_seen_classes(tiny):
    stats = SplitStats()
    for i, gpt_id in enumerate([13, 13, 13, 5]):
        stats.add(to_example(_embedded(f"p{i}", "s", gpt_id), tiny))
    report = class_weights_report(stats, tiny, WeightConfig(1.0, 1.0, 10.0))
    level_2 = report["levels"][1]
    # level 2 counts: Farm (5) 1, Puzzles (12) 3 → N 4, K 2: Farm 4/(2·2) = 1, Puzzles 4/(2·4) = 0.5
    assert [(w["id"], w["count"], w["weight"]) for w in level_2["weights"]] == [(5, 1, 1.0), (12, 3, 0.5)]
    assert level_2["unseen_weight"] == 2.0 and level_2["classes"] == 4 and level_2["classes_seen"] == 2
    assert report["levels"][3] == {"level": 4, "classes": 0, "classes_seen": 0, "labelled_examples": 0,
                                   "unseen_weight": 0.0, "weights": []}


def test_choose_duplicate_keeps_the_latest_whatever_the_order():
    old = {"product_id": "p", "title": "old", "updated_at": dt.datetime(2024, 1, 1, tzinfo=dt.UTC)}
    new = {"product_id": "p", "title": "new", "updated_at": dt.datetime(2025, 1, 1, tzinfo=dt.UTC)}
    undated = {"product_id": "p", "title": "undated", "updated_at": None}
    assert choose_duplicate([old, undated, new]) == (new, [old, undated])
    assert choose_duplicate([new, undated, old])[0] is new
    twins = [{"product_id": "p", "title": "b"}, {"product_id": "p", "title": "a"}]
    assert choose_duplicate(twins)[0] == choose_duplicate(twins[::-1])[0]


# -- the pipeline on crafted records ----------------------------------------------------------------
class _VectorsFn(beam.DoFn):
    def process(self, record):
        if record["title"] == FAIL_TITLE:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(
                "embed", Reason.EMBEDDING_FAILED, "crafted failure", record))
            return
        embedded = _embedded(record["product_id"], record["store"], record["gpt_id"])
        if record["title"] == NAN_TITLE:
            embedded["text_embedding"] = np.full(TEXT_DIM, np.nan, np.float32)
        yield {**record, **{k: v for k, v in embedded.items() if "embedding" in k or k == IMAGE_PRESENT}}


class VectorsFromIds(beam.PTransform):
    """The `EmbedProducts` contract with vectors drawn from the product id: no encoder needed, and
    a title of FAIL_TITLE / NAN_TITLE makes the embed stage fail / return a broken vector."""

    def expand(self, products):
        vectors = products | "Vectors" >> beam.ParDo(_VectorsFn()).with_outputs(DEAD_LETTER, main=EMBEDDED)
        return Routed(vectors[EMBEDDED], vectors[DEAD_LETTER])


STORES = [f"s{i}" for i in range(12)]
GOOD_LABELS = [13, 3, 4, 5, 11, 12, 1, 10, 2]


def _good_records() -> list[dict]:
    return [{"product_id": f"{store}#{i}", "store": store, "title": f"thing {i} of {store}",
             "gpt_id": GOOD_LABELS[(i + j) % len(GOOD_LABELS)], "lang": "en" if i % 3 else "de",
             "updated_at": "2025-01-01T00:00:00Z"}
            for j, store in enumerate(STORES) for i in range(3 + j % 4)]


BAD_RECORDS = [
    ({"product_id": "bad#unknown", "store": "s2", "title": "x", "gpt_id": 999}, Reason.UNKNOWN_LABEL),
    ({"product_id": "bad#nolabel", "store": "s2", "title": "x"}, Reason.UNKNOWN_LABEL),
    ({"product_id": "bad#mismatch", "store": "s2", "title": "x", "gpt_id": 3, "gpt_path": "Toys > Dolls"},
     Reason.LABEL_PATH_MISMATCH),
    ({"product_id": "s3#0", "store": "s3", "title": "older copy", "gpt_id": 12,
      "updated_at": "2020-01-01T00:00:00Z"}, Reason.DUPLICATE_PRODUCT_ID),
    ({"product_id": "bad#embed", "store": "s2", "title": FAIL_TITLE, "gpt_id": 1}, Reason.EMBEDDING_FAILED),
    ({"product_id": "bad#nan", "store": "s2", "title": NAN_TITLE, "gpt_id": 1}, Reason.EMBEDDING_FAILED),
    ({"product_id": "", "store": "s2", "title": "x", "gpt_id": 1}, Reason.MISSING_PRODUCT_ID),
    ({"product_id": "bad#empty", "store": "s2", "gpt_id": 1}, Reason.NO_CONTENT),
    ({"product_id": "bad#time", "store": "s2", "title": "x", "updated_at": "soon"}, Reason.BAD_TIMESTAMP),
    ({"product_id": "bad#type", "store": "s2", "title": "x", "tags": 5}, Reason.BAD_FIELD_TYPE),
]
BAD_LINES = [("this is not json", Reason.INVALID_JSON), ("[1, 2]", Reason.NOT_AN_OBJECT)]


@pytest.fixture(scope="module")
def taxonomy_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("taxonomy") / "taxonomy-with-ids.en-US.txt"
    path.write_text(TINY_TAXONOMY, encoding="utf-8")
    return str(path)


def test_build_examples_routes_every_label_and_embedding_failure(taxonomy_file, tiny):
    from linnet_core.records import normalize

    good = [normalize(raw) for raw in _good_records()]
    bad = [(normalize(raw), reason) for raw, reason in BAD_RECORDS[:6]]
    split = SplitConfig()
    expected_examples = [(assign_split(r, split), r["product_id"], tuple(level_labels(r["gpt_id"], tiny)))
                         for r in good]
    with TestPipeline() as pipeline:
        built = (pipeline | beam.Create(good + [record for record, _ in bad])
                 | build_training_data.BuildExamples(taxonomy_file, split, VectorsFromIds(), run_id="r1"))
        summary = built.records | "Summary" >> beam.MapTuple(
            lambda name, ex: (name, ex["product_id"], tuple(ex[label_feature(k)] for k in range(1, 8))))
        assert_that(summary, equal_to(expected_examples), label="Examples")
        reasons = built.dead_letter | "Reasons" >> beam.Map(lambda row: (row["product_id"], row["reason"]))
        assert_that(reasons, equal_to([(r["product_id"], reason.value) for r, reason in bad]), label="Dead")


@pytest.fixture(scope="module")
def crafted_run(taxonomy_file, tmp_path_factory, models_dir) -> tuple[Path, dict]:
    """The pipeline on the crafted records; the products' vectors come from their ids, but the category
    embeddings of the taxonomy prior come from the prepared text encoder."""
    folder = tmp_path_factory.mktemp("crafted")
    lines = [json.dumps(r) for r in _good_records()] + [json.dumps(r) for r, _ in BAD_RECORDS]
    lines += [line for line, _ in BAD_LINES]
    (folder / "products.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    output = folder / "data"
    argv = ["--input", str(folder / "products.jsonl"), "--taxonomy", taxonomy_file, "--output", str(output),
            "--shards", "2", "--run_id", "crafted", "--store_cap", str(CRAFTED_STORE_CAP),
            "--models_dir", models_dir]
    stats = build_training_data.run(argv, test_pipeline=TestPipeline(argv=argv), embed=VectorsFromIds())
    return output, stats


CRAFTED_STORE_CAP = 4  # the crafted stores hold 3 to 6 products: the 5- and 6-product ones get capped


def _crafted_store_factor(store: str) -> float:
    """By hand: min(1, cap / n), n = the store's good products when the store's split is train
    (the bad records that share s2/s3 are dead letters and never reach the transform), else 1."""
    n = sum(record["store"] == store for record in _good_records())
    in_train = assign_split({"store": store, "product_id": "x"}, SplitConfig()) == "train"
    return min(1.0, CRAFTED_STORE_CAP / n) if in_train else 1.0


def test_run_writes_every_dead_letter_reason_and_counts_add_up(crafted_run):
    output, stats = crafted_run
    dead = pq.read_table(output / "dead_letters").to_pylist()
    expected = Counter(reason.value for _, reason in BAD_RECORDS + BAD_LINES)
    assert Counter(row["reason"] for row in dead) == expected
    assert set(dead[0]) == set(schemas.field_names("dead_letters"))
    good = len(_good_records())
    assert stats["inputs"] == good + len(BAD_RECORDS) + len(BAD_LINES)
    assert stats["examples"] == good  # the older copy of s3#0 is a dead letter, the newer one kept
    assert stats["dead_letters_by_reason"] == dict(expected)
    assert sum(s["examples"] for s in stats["splits"].values()) == stats["examples"]
    assert json.loads((output / "stats.json").read_text()) == stats
    assert not list(output.parent.glob(".data.partial-*")) and not (output / "tmp").exists()


def _read_split(output: Path, split: str) -> list[dict]:
    from linnet_core.model.data import feature_spec

    files = sorted(glob.glob(str(output / split / "part-*.tfrecord.gz")))
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").map(
        lambda record: tf.io.parse_single_example(record, feature_spec(include_weights=True)))
    return [{k: v.numpy() for k, v in example.items()} for example in dataset]


def test_tfrecords_hold_exactly_the_training_features(crafted_run):
    from linnet_core.model.data import feature_spec

    output, _ = crafted_run
    files = sorted(glob.glob(str(output / "train" / "part-*.tfrecord.gz")))
    record = next(iter(tf.data.TFRecordDataset(files, compression_type="GZIP")))
    example = tf.train.Example.FromString(record.numpy())
    assert set(example.features.feature) == set(feature_spec(include_weights=True))


def test_tfrecords_hold_the_labels_splits_and_train_weights(crafted_run, tiny):
    output, stats = crafted_run
    weights = json.loads((output / "class_weights.json").read_text())
    by_level = [{w["index"]: w["weight"] for w in level["weights"]} for level in weights["levels"]]
    records = {r["product_id"]: r for r in _good_records()}
    seen, factors = set(), set()
    for split in SPLITS:
        examples = _read_split(output, split)
        assert len(examples) == stats["splits"][split]["examples"] == stats["splits"][split]["written"]
        assert len(glob.glob(str(output / split / "part-*-of-00002.tfrecord.gz"))) == 2
        for example in examples:
            product_id = example["product_id"].decode()
            record = records[product_id]
            assert assign_split(record, SplitConfig()) == split
            assert example["gpt_id"] == record["gpt_id"]
            labels = [int(example[label_feature(k)]) for k in range(1, LEVELS + 1)]
            assert labels == level_labels(record["gpt_id"], tiny)
            factor = _crafted_store_factor(record["store"])
            for level, label in enumerate(labels, start=1):
                weight = float(example[f"weight_level_{level}"])
                if label == NO_LABEL:
                    assert weight == 0.0
                elif label in by_level[level - 1]:
                    assert weight == pytest.approx(factor * by_level[level - 1][label], rel=1e-5)
                else:  # a class seen only outside train gets the unseen weight
                    assert weight == pytest.approx(
                        factor * weights["levels"][level - 1]["unseen_weight"], rel=1e-5)
            seen.add(product_id)
            factors.add(factor)
    assert len(seen) == stats["examples"]
    assert factors == {1.0, 0.8, 4 / 6}, "the crafted split should exercise capped and uncapped stores"
    assert weights["store_cap"] == CRAFTED_STORE_CAP
    # The taxonomy prior's node embeddings come with the data, one per node of the taxonomy.
    from linnet_core.category_prior import CATEGORY_EMBEDDINGS, CategoryEmbeddings

    embeddings = CategoryEmbeddings.load(output / CATEGORY_EMBEDDINGS)
    embeddings.check(tiny)
    assert embeddings.encoder_id.startswith("text/") and embeddings.vectors.shape == (9, TEXT_DIM)


def test_transform_fn_is_self_contained_and_matches_class_weights(crafted_run):
    import tensorflow_transform as tft

    output, _ = crafted_run
    tft_output = tft.TFTransformOutput(str(output))
    assert set(tft_output.raw_feature_spec()) | {f"weight_level_{k}" for k in range(1, 8)} == set(
        tft_output.transformed_feature_spec())
    weights = json.loads((output / "class_weights.json").read_text())
    level_3 = weights["levels"][2]
    size = level_3["classes"]
    raw = {name: tf.zeros([size] + list(spec.shape), spec.dtype)
           for name, spec in tft_output.raw_feature_spec().items()}
    raw[label_feature(3)] = tf.range(size, dtype=tf.int64)
    transformed = tft_output.transform_features_layer()(raw)
    expected = [next((w["weight"] for w in level_3["weights"] if w["index"] == i), level_3["unseen_weight"])
                for i in range(size)]
    np.testing.assert_allclose(transformed["weight_level_3"].numpy(), expected, rtol=1e-5)
    np.testing.assert_array_equal(transformed["weight_level_4"].numpy(), np.zeros(size))


def test_reads_labelled_products_from_a_bigquery_table(taxonomy_file, tmp_path, bq_emulator, models_dir):
    from google.cloud import bigquery

    from pipelines import bigquery as bq

    rows = _good_records()[:20] + [BAD_RECORDS[0][0]]
    client = bq.BigQueryConnection(bq_emulator.project, bq_emulator.endpoint,
                                   bq_emulator.storage_endpoint).client()
    dataset = f"{bq_emulator.project}.training_{uuid.uuid4().hex[:10]}"  # the emulator is the session's
    table = f"{dataset}.products"
    client.create_dataset(dataset)
    client.create_table(bigquery.Table(table, schema=bq.table_schema("products", partitioned=False)))
    assert not client.insert_rows(client.get_table(table), rows)
    argv = ["--input_table", table, "--project", bq_emulator.project,
            "--bigquery_endpoint", bq_emulator.endpoint,
            "--bigquery_storage_endpoint", bq_emulator.storage_endpoint, "--taxonomy", taxonomy_file,
            "--output", str(tmp_path / "data"), "--shards", "1", "--models_dir", models_dir]
    stats = build_training_data.run(argv, test_pipeline=TestPipeline(argv=argv), embed=VectorsFromIds())
    assert (stats["inputs"], stats["examples"]) == (21, 20)
    assert stats["dead_letters_by_reason"] == {Reason.UNKNOWN_LABEL.value: 1}
    examples = [example for split in SPLITS for example in _read_split(tmp_path / "data", split)]
    assert sorted(e["product_id"].decode() for e in examples) == sorted(r["product_id"] for r in rows[:20])
