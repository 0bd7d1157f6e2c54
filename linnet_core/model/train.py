"""Training: single process by default, data-parallel MultiWorkerMirroredStrategy when TF_CONFIG
names a cluster. The chief writes the model directory (docs/ARCHITECTURE.md) and exports it."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras

from linnet_core.calibration.thresholds import Thresholds, default_thresholds, save_thresholds
from linnet_core.category_prior import CATEGORY_EMBEDDINGS
from linnet_core.exemplars import EXEMPLARS, Exemplars, build_exemplars
from linnet_core.features import TITLE_EMBEDDING
from linnet_core.label_audit import example_factors
from linnet_core.model import training_report
from linnet_core.model.config import ModelConfig
from linnet_core.model.data import (
    DataError,
    array_dataset,
    class_labels,
    count_examples,
    make_dataset,
    read_splits,
    scaled_weights,
    split_files,
)
from linnet_core.model.export import (
    CALIBRATION_JSON,
    CONFIG_JSON,
    TAXONOMY_COPY,
    WEIGHTS,
    copy_shopify_mapping,
    export_inference_model,
    read_model_json,
    write_model_json,
)
from linnet_core.model.training_model import build_training_model, compile_training_model
from linnet_core.progress import Progress
from linnet_core.publish import written_whole
from linnet_core.taxonomy import Taxonomy
from linnet_core.training_data import CLASS_WEIGHTS, ENCODERS_JSON, SPLITS, VALIDATION

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cluster:
    """Where this process stands in training: the strategy and its worker's place."""

    strategy: tf.distribute.Strategy
    num_workers: int
    worker_index: int
    is_chief: bool


def data_store_cap(data_dir: str | Path) -> float | None:
    """The store cap the training data's example weights use (DATA/class_weights.json; None: off)."""
    with tf.io.gfile.GFile(f"{str(data_dir).rstrip('/')}/{CLASS_WEIGHTS}") as handle:
        return json.load(handle).get("store_cap")


def exemplar_memory(arrays: dict, taxonomy: Taxonomy, store_cap: float | None,
                    config: ModelConfig, factors: np.ndarray | None = None) -> Exemplars:
    """The exemplar memory of a split's arrays (`data.read_split`): title embeddings, level labels, and
    the store factor with the training data's cap, so that memory and training weigh stores alike;
    bounded as the config says."""
    return build_exemplars(arrays[TITLE_EMBEDDING], class_labels(arrays, taxonomy.max_depth), arrays["store"],
                           taxonomy, store_cap, config.exemplars_per_class, config.exemplars_per_store_class,
                           factors)


def cluster_from_env(environ: dict | None = None) -> Cluster:
    """MultiWorkerMirroredStrategy when TF_CONFIG lists more than one worker, else the default strategy.

    Must run before any other TF op: a multi-worker strategy cannot start once the runtime is up.
    The chief is the "chief" task, or worker 0 when the cluster has none.
    """
    raw = (environ if environ is not None else os.environ).get("TF_CONFIG")
    if not raw:
        return Cluster(tf.distribute.get_strategy(), 1, 0, True)
    tf_config = json.loads(raw)
    cluster = tf_config.get("cluster", {})
    task = tf_config.get("task", {})
    num_workers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
    if num_workers <= 1:
        return Cluster(tf.distribute.get_strategy(), 1, 0, True)
    task_type, task_index = task.get("type"), int(task.get("index", 0))
    is_chief = task_type == "chief" or (task_type == "worker" and task_index == 0 and "chief" not in cluster)
    worker_index = task_index + (len(cluster.get("chief", [])) if task_type == "worker" else 0)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    return Cluster(strategy, num_workers, worker_index, is_chief)


def _distributed_input(cluster: Cluster, files: list[str], batch_size: int, config: ModelConfig,
                       shuffle: bool, repeat: bool):
    """Each worker reads its own shard of the records, batched per replica."""

    def input_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        return make_dataset(files, context.get_per_replica_batch_size(batch_size),
                            shuffle_buffer=config.shuffle_buffer if shuffle else 0, seed=config.seed,
                            repeat=repeat, num_shards=context.num_input_pipelines,
                            shard_index=context.input_pipeline_id)

    return cluster.strategy.distribute_datasets_from_function(input_fn)


def training_splits(data_dir: str | Path, holdout: Sequence[str] = ()) -> tuple[str, ...]:
    """The splits a model trains on: every split DATA has (a production model on every labelled store)
    but the held-out ones.

    Raises:
        DataError: an unknown split, or nothing left to train on.
    """
    unknown = sorted(set(holdout) - set(SPLITS))
    if unknown:
        raise DataError(f"unknown split(s) {unknown} to hold out; splits are {list(SPLITS)}")
    prefix = str(data_dir).rstrip("/")
    splits = tuple(split for split in SPLITS
                   if split not in holdout and tf.io.gfile.glob(f"{prefix}/{split}/part-*.tfrecord.gz"))
    if not splits:
        raise DataError(f"{data_dir}: no split to train on (held out: {list(holdout)})")
    return splits


def _files(data_dir: str | Path, splits: Sequence[str]) -> list[str]:
    return [path for split in splits for path in split_files(data_dir, split)]


def train(data_dir: str | Path, output_dir: str | Path, config: ModelConfig, taxonomy: Taxonomy,
          thresholds: Thresholds | None = None, cluster: Cluster | None = None,
          shopify_dir: str | Path | None = None, holdout: Sequence[str] = (),
          flagged: Collection[str] = (), flagged_weight: float = 0.0) -> dict:
    """Train on every split of DATA but the `holdout` ones (none: a production model on every labelled
    store); validate each epoch on DATA/validation when it is held out. The chief writes `output_dir`.

    Args:
        data_dir: a `linnet build-training-data` output (docs/ARCHITECTURE.md).
        output_dir: the model directory to write (chief only).
        config: hyperparameters.
        taxonomy: the taxonomy whose level indexes the data's labels use.
        thresholds: thresholds to bake in (default: default_thresholds()).
        cluster: from cluster_from_env() (called here when None).
        shopify_dir: a Shopify taxonomy folder whose GPT mapping the model directory keeps (for the
            rows' Shopify category); None: rows get none.
        holdout: splits whose stores the network and the exemplar memory never see (`training_splits`).
        flagged: product ids whose labels a label audit doubts (`linnet audit-labels`): their examples'
            weights in the loss and in the exemplar memory are multiplied by `flagged_weight` (0 drops
            them). Single-process training only.

    Returns:
        The per-epoch curves (curves.json's content).

    Raises:
        DataError: a split is missing or empty, or `flagged` under multi-worker training.
        ValueError: flagged_weight outside [0, 1].
    """
    cluster = cluster or cluster_from_env()
    tf_keras.utils.set_random_seed(config.seed)
    splits = training_splits(data_dir, holdout)
    validate = VALIDATION in holdout
    train_files = _files(data_dir, splits)
    validation_files = split_files(data_dir, VALIDATION) if validate else []
    n_train = count_examples(train_files)
    n_validation = count_examples(validation_files) if validate else 0
    if n_train == 0 or (validate and n_validation == 0):
        raise DataError(f"{data_dir}: empty split (train {n_train}, validation {n_validation} examples)")
    multi = cluster.num_workers > 1
    if multi and flagged:
        raise DataError("down-weighting audited labels needs single-process training (no TF_CONFIG cluster)")
    started = time.monotonic()
    validation = {} if not validate else {
        "validation_data": _distributed_input(cluster, validation_files, config.batch_size, config,
                                              shuffle=False, repeat=multi),
        "validation_steps": math.ceil(n_validation / config.batch_size) if multi else None}
    # Many workers stream their shards of the files; one process reads the examples in a canonical order
    # (data.read_splits), so that two builds of the same data train the same network.
    if multi:
        examples = _distributed_input(cluster, train_files, config.batch_size, config, shuffle=True,
                                      repeat=True)
    else:
        arrays = read_splits(data_dir, splits, weights=True)
        if flagged:
            arrays = scaled_weights(arrays, example_factors(arrays["product_id"], flagged, flagged_weight))
        examples = array_dataset(arrays, config.batch_size, shuffle_buffer=config.shuffle_buffer,
                                 seed=config.seed, repeat=True)
    network, history = fit_network(config, taxonomy.level_sizes(), examples,
                                   math.ceil(n_train / config.batch_size), cluster.strategy, **validation)
    seconds = time.monotonic() - started
    curves = training_report.curves(history.history, taxonomy.max_depth)
    if cluster.is_chief:
        weights = network.get_weights()
        # Written aside and renamed into place: model.json never names a model whose SavedModel is
        # half-written, and a failed run keeps the previous model.
        with written_whole(Path(output_dir)) as staging:
            _write_model_dir(staging, weights, config, taxonomy, thresholds or default_thresholds(),
                             curves, {"train_examples": n_train, "validation_examples": n_validation,
                                      "workers": cluster.num_workers, "train_seconds": round(seconds, 1),
                                      "data_dir": str(data_dir), "splits": list(splits),
                                      "held_out_splits": list(holdout),
                                      **({"flagged_labels": len(flagged), "flagged_weight": flagged_weight}
                                         if flagged else {})}, shopify_dir, flagged, flagged_weight)
    return curves


class EpochProgress(tf_keras.callbacks.Callback):
    """Epochs done, rate and ETA as `linnet_core.progress` lines (Keras' own epoch lines carry no ETA).
    Epoch ends only: a batch hook would make Keras sync its logs after every step."""

    def __init__(self, what: str, epochs: int) -> None:
        super().__init__()
        self.progress = Progress(what, total=epochs, unit="epochs")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.progress.update()


def fit_network(config: ModelConfig, level_sizes: list[int], dataset, steps_per_epoch: int,
                strategy: tf.distribute.Strategy | None = None, what: str = "training", **fit_options):
    """Build, compile and fit the training model on `dataset` (repeated batches of model examples) for
    `config.epochs` epochs of `steps_per_epoch` steps. `linnet train` and the cross-fitted networks of
    `linnet tune-thresholds` both train through here; `what` names their progress lines.

    Returns:
        (the fitted tf_keras model, its History).
    """
    with (strategy or tf.distribute.get_strategy()).scope():
        network = build_training_model(config, level_sizes)
        compile_training_model(network, config)
    history = network.fit(dataset, epochs=config.epochs, steps_per_epoch=steps_per_epoch, verbose=2,
                          callbacks=[EpochProgress(what, config.epochs)], **fit_options)
    return network, history


def _write_model_dir(output_dir: Path, weights: list, config: ModelConfig, taxonomy: Taxonomy,
                     thresholds: Thresholds, curves: dict, training: dict,
                     shopify_dir: str | Path | None = None, flagged: Collection[str] = (),
                     flagged_weight: float = 0.0) -> None:
    """Weights, config, taxonomy copy, category embeddings and encoder ids (when the data has them), the
    Shopify mapping, the exemplar memory (the training splits), thresholds, model.json, curves; then
    export and the model card: everything a worker reads travels in the model directory.

    The weights go through a fresh model built outside the strategy, so saving needs no collective
    op the other workers would have to join.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    network = build_training_model(config, taxonomy.level_sizes())
    network.set_weights(weights)
    network.save_weights(str(output_dir / WEIGHTS))
    (output_dir / CONFIG_JSON).write_text(json.dumps(config.to_json(), indent=2) + "\n", encoding="utf-8")
    shutil.copyfile(taxonomy.source, output_dir / TAXONOMY_COPY)
    for name in (CATEGORY_EMBEDDINGS, ENCODERS_JSON):  # the taxonomy prior's node embeddings travel too
        if Path(training["data_dir"], name).exists():
            shutil.copyfile(Path(training["data_dir"], name), output_dir / name)
    if shopify_dir:
        copy_shopify_mapping(shopify_dir, output_dir)
    data_dir = training["data_dir"]
    arrays = read_splits(data_dir, training["splits"])
    factors = example_factors(arrays["product_id"], flagged, flagged_weight) if flagged else None
    memory = exemplar_memory(arrays, taxonomy, data_store_cap(data_dir), config, factors)
    memory.save(output_dir / EXEMPLARS)
    training = {**training, "exemplars": len(memory.weights), "stores": len(set(arrays["store"]))}
    save_thresholds(thresholds, output_dir / CALIBRATION_JSON)
    digest = hashlib.sha256((output_dir / WEIGHTS).read_bytes()).hexdigest()[:8]
    write_model_json(output_dir, {  # export adds model_version, the hash of the content
        "training_run": f"linnet-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{digest}",
        "taxonomy_version": taxonomy.version,
        "taxonomy_fingerprint": taxonomy.fingerprint,
        "thresholds_version": thresholds.version,
        "default_decoding": "exact",
        "level_sizes": taxonomy.level_sizes(),
        "config": config.to_json(),
        "training": training,
        "exemplars": training["exemplars"],
    })
    training_report.write_curves(curves, output_dir)
    export_inference_model(output_dir)
    validation = (training_report.evaluate_split(output_dir, Path(training["data_dir"]), VALIDATION, taxonomy)
                  if VALIDATION in training["held_out_splits"] else {})
    info = read_model_json(output_dir)
    write_model_json(output_dir, {**info, "validation": validation})
    training_report.write_model_card(output_dir, info, validation)
    logger.info("wrote model directory %s", output_dir)
