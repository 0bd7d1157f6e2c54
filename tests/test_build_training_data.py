"""`linnet build-training-data` end to end on a sample of the shared products with the real encoders:
TFRecords read back with the training feature spec, labels checked against the taxonomy, and a re-run
(warm embedding cache) giving the same splits, class weights and examples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from linnet_core.features import (
    IMAGE_EMBEDDING,
    IMAGE_PRESENT,
    LEVELS,
    NO_LABEL,
    TEXT_EMBEDDING,
    label_feature,
)
from linnet_core.model.data import count_examples, feature_spec, split_files
from linnet_core.training_data import SPLITS, SplitConfig, assign_split
from pipelines import build_training_data, defaults

pytestmark = [pytest.mark.slow, pytest.mark.encoders, pytest.mark.shared_data]
SAMPLE = 240


@pytest.fixture(scope="module")
def source() -> dict[str, dict]:
    """The shared labelled products by product_id."""
    with open(defaults.PRODUCTS_JSONL, encoding="utf-8") as handle:
        return {record["product_id"]: record for record in map(json.loads, handle)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[tuple[Path, dict]]:
    """Two runs over the same sample sharing one embedding cache (cold, then warm)."""
    root = tmp_path_factory.mktemp("build")
    results = []
    for name in ("first", "second"):
        output = root / name
        stats = build_training_data.run(["--sample", str(SAMPLE), "--output", str(output),
                                         "--embedding_cache", str(root / "cache"), "--shards", "3"])
        results.append((output, stats))
    return results


def _examples(output: Path, split: str) -> dict[str, dict]:
    dataset = tf.data.TFRecordDataset(split_files(output, split), compression_type="GZIP").map(
        lambda record: tf.io.parse_single_example(record, feature_spec(include_weights=True)))
    return {example["product_id"].numpy().decode(): {k: v.numpy() for k, v in example.items()}
            for example in dataset}


def test_counts_per_split_are_inputs_minus_dead_letters(runs):
    output, stats = runs[0]
    assert stats["inputs"] == SAMPLE
    assert stats["examples"] + stats["dead_letters"] == SAMPLE
    for split in SPLITS:
        files = split_files(output, split)
        assert len(files) == 3
        assert count_examples(files) == stats["splits"][split]["examples"]
    assert stats["overall"]["label_coverage"][0] == 1.0
    assert json.loads((output / "stats.json").read_text()) == stats


def test_tfrecords_carry_the_labels_of_the_taxonomy(runs, source, gpt):
    output, _ = runs[0]
    split_config = SplitConfig()
    checked = 0
    for split in SPLITS:
        for product_id, example in _examples(output, split).items():
            record = source[product_id]
            node = gpt.resolve(record["gpt_id"], record["gpt_path"])
            assert example["gpt_id"] == node.id
            labels = [int(example[label_feature(level)]) for level in range(1, LEVELS + 1)]
            ancestors = gpt.ancestors(node.id, include_self=True)
            assert [gpt.node_at(level, labels[level - 1]).id for level in range(1, node.depth + 1)] == [
                a.id for a in ancestors]
            assert labels[node.depth:] == [NO_LABEL] * (LEVELS - node.depth)
            assert assign_split(record, split_config) == split
            assert np.linalg.norm(example[TEXT_EMBEDDING]) == pytest.approx(1.0, abs=1e-3)
            assert example[IMAGE_PRESENT] == float(np.any(example[IMAGE_EMBEDDING] != 0))
            weights = [float(example[f"weight_level_{level}"]) for level in range(1, LEVELS + 1)]
            assert all(w > 0 for w in weights[:node.depth]) and not any(weights[node.depth:])
            checked += 1
    assert checked == runs[0][1]["examples"]


def test_rerun_gives_same_splits_weights_and_examples(runs):
    (first, first_stats), (second, second_stats) = runs
    assert (first / "class_weights.json").read_text() == (second / "class_weights.json").read_text()
    first_stats, second_stats = dict(first_stats), dict(second_stats)
    counters = [first_stats.pop("counters"), second_stats.pop("counters")]
    assert first_stats == second_stats
    # The stats carry the run's Beam counters: only the second run found its texts in the cache.
    hits = [run.get("linnet:text_cache_hits", 0) for run in counters]
    assert hits[0] == 0 and hits[1] >= first_stats["examples"]
    for split in SPLITS:
        before, after = _examples(first, split), _examples(second, split)
        assert before.keys() == after.keys()
        for product_id, example in before.items():
            for name, value in example.items():
                np.testing.assert_array_equal(value, after[product_id][name], err_msg=name)
