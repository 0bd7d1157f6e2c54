"""Config, input fn and training model: masked per-level losses and accuracies, heads per level."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from synthetic_training_data import write_training_data

from linnet_core.features import LEVELS
from linnet_core.model.config import ConfigError, ModelConfig, default_config, load_config
from linnet_core.model.data import DataError, count_examples, feature_spec, make_dataset, split_files
from linnet_core.model.train import fit_network
from linnet_core.model.training_model import MaskedAccuracy, MaskedSparseCrossentropy, build_training_model
from linnet_core.taxonomy import Taxonomy


def test_default_config_is_documented_and_valid() -> None:
    config = default_config()
    assert len(config.loss_weights) == LEVELS
    documented = json.loads(Path("linnet_core/config/model.json").read_text())["doc"]
    assert set(documented) == set(config.to_json())


def test_config_file_overrides_defaults_and_rejects_typos(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"epochs": 3, "shared_units": [64]}))
    config = load_config(path)
    assert (config.epochs, config.shared_units, config.dropout) == (3, (64,), default_config().dropout)
    assert ModelConfig.from_json(config.to_json()) == config
    path.write_text(json.dumps({"epoch": 3}))
    with pytest.raises(ConfigError, match="unknown config keys \\['epoch'\\]"):
        load_config(path)
    path.write_text(json.dumps({"loss_weights": [1.0, 1.0]}))
    with pytest.raises(ConfigError, match="loss_weights needs 7"):
        load_config(path)
    path.write_text(json.dumps({"dropout": 1.5}))
    with pytest.raises(ConfigError, match="dropout"):
        load_config(path)


def test_feature_spec_follows_the_schema_file() -> None:
    spec = feature_spec()
    assert spec["text_embedding"].shape == [384] and spec["image_embedding"].shape == [1280]
    assert spec["title_embedding"].shape == [384]
    assert spec["label_level_7"].dtype == tf.int64 and spec["weight_level_1"].dtype == tf.float32
    assert "weight_level_1" not in feature_spec(include_weights=False)


def test_input_fn_reads_synthetic_records(tmp_path: Path, gpt: Taxonomy) -> None:
    write_training_data(tmp_path, gpt, sizes={"train": 50, "validation": 10}, files_per_split=3)
    files = split_files(tmp_path, "train")
    assert len(files) == 3 and count_examples(files) == 50
    shards = [sum(int(x["image_present"].shape[0]) for x, _, _ in make_dataset(files, 8, num_shards=2,
                                                                               shard_index=i))
              for i in range(2)]
    assert sum(shards) == 50 and min(shards) > 0
    inputs, labels, weights = next(iter(make_dataset(files, 50)))
    assert inputs["text_embedding"].shape == (50, 384) and inputs["title_embedding"].shape == (50, 384)
    labelled = labels["level_3"].numpy() >= 0
    assert np.all(weights["level_3"].numpy()[~labelled] == 0.0)
    assert np.all(weights["level_3"].numpy()[labelled] > 0.0)
    with pytest.raises(DataError, match="calibration"):
        split_files(tmp_path, "calibration")


@pytest.mark.trains_model  # fits a small network for two epochs
def test_training_reports_its_epochs_with_an_eta(tmp_path: Path, gpt: Taxonomy,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    write_training_data(tmp_path, gpt, sizes={"train": 40}, files_per_split=1)
    config = ModelConfig.from_json({"shared_units": [16], "level_units": [8], "epochs": 2, "batch_size": 20})
    dataset = make_dataset(split_files(tmp_path, "train"), 20, repeat=True)
    with caplog.at_level(logging.INFO, logger="linnet_core.progress"):
        fit_network(config, gpt.level_sizes(), dataset, steps_per_epoch=2, what="training")
    lines = [record.getMessage() for record in caplog.records if record.name == "linnet_core.progress"]
    assert lines[-1].startswith("training: 2/2 epochs") and lines[-1].endswith("ETA 0m00s")


def test_training_model_has_one_head_per_level(gpt: Taxonomy) -> None:
    config = ModelConfig.from_json({"shared_units": [16], "level_units": [8]})
    model = build_training_model(config, gpt.level_sizes())
    rng = np.random.default_rng(0)
    inputs = {"text_embedding": tf.constant(rng.normal(size=(2, 384)), tf.float32),
              "title_embedding": tf.constant(rng.normal(size=(2, 384)), tf.float32),
              "image_embedding": tf.zeros((2, 1280)), "image_present": tf.zeros((2,))}
    outputs = model(inputs)
    assert {name: tuple(value.shape) for name, value in outputs.items()} == {
        f"level_{k}": (2, size) for k, size in enumerate(gpt.level_sizes(), start=1)}
    # Level k > 1 heads read level k-1's softmax: other level-1 weights change level-2 logits.
    before = outputs["level_2"].numpy()
    kernel, bias = model.get_layer("level_1").get_weights()
    model.get_layer("level_1").set_weights([kernel + rng.normal(size=kernel.shape), bias])
    after = model(inputs)["level_2"].numpy()
    assert not np.allclose(before, after)
    assert not model.losses
    penalised = ModelConfig.from_json({**config.to_json(), "l2": 1e-3})
    assert float(tf.add_n(build_training_model(penalised, gpt.level_sizes()).losses)) > 0.0


def test_masked_loss_and_accuracy_ignore_missing_labels() -> None:
    logits = tf.constant([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 5.0]])
    labels = tf.constant([0, 2, -1], tf.int64)
    weights = tf.constant([1.0, 2.0, 0.0])
    loss = MaskedSparseCrossentropy(reduction="none")(labels, logits, sample_weight=weights).numpy()
    expected = -np.log(tf.nn.softmax(logits).numpy()[[0, 1], [0, 2]]) * [1.0, 2.0]
    np.testing.assert_allclose(loss, [*expected, 0.0], rtol=1e-5)
    accuracy = MaskedAccuracy()
    accuracy.update_state(labels, logits)
    assert accuracy.result().numpy() == pytest.approx(0.5)
