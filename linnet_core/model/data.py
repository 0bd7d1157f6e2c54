"""Input fn: training TFRecords (gzip tf.train.Example) → batches of (features, labels, sample weights).

The feature spec comes from schemas/training_features.json, the one place it is written down.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import tensorflow as tf

import schemas
from linnet_core.features import LEVELS, MODEL_INPUTS, label_feature, weight_feature
from linnet_core.training_data import SPLITS

_DTYPES = {"string": tf.string, "float32": tf.float32, "int64": tf.int64}


class DataError(ValueError):
    """A training-data directory or file that cannot feed the model."""


def feature_spec(include_weights: bool = True) -> dict[str, tf.io.FixedLenFeature]:
    """`tf.io.parse_example` spec of the training TFRecords, expanded per level.

    Args:
        include_weights: add the `weight_level_k` features tf.Transform writes (training splits).
    """
    schema = schemas.load("training_features")
    entries = schema["raw"] + (schema["transformed_extra"] if include_weights else [])
    spec = {}
    for entry in entries:
        names = ([entry["name"].format(level=level) for level in range(1, schema["levels"] + 1)]
                 if entry.get("per_level") else [entry["name"]])
        for name in names:
            spec[name] = tf.io.FixedLenFeature(entry["shape"], _DTYPES[entry["dtype"]])
    return spec


def level_name(level: int) -> str:
    """Name of the level-`level` output of the model (`level_1` .. `level_7`)."""
    return f"level_{level}"


def split_files(data_dir: str | Path, split: str) -> list[str]:
    """The `part-*.tfrecord.gz` files of one split, local or on a TF file system (gs://).

    Raises:
        DataError: unknown split, or no files.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {SPLITS}")
    pattern = f"{str(data_dir).rstrip('/')}/{split}/part-*.tfrecord.gz"
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise DataError(f"no {split} data: {pattern} matches nothing")
    return files


def count_examples(files: list[str]) -> int:
    """Number of records in gzip TFRecord files (one pass, no parsing)."""
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    return int(dataset.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1))


def to_model_example(parsed: dict[str, tf.Tensor]) -> tuple[dict, dict, dict]:
    """(inputs, labels, sample weights) keyed by model input / output name.

    Labels keep -1 where the label is shallower than the level; the weight there is 0, so the loss
    (which clips the label to a valid index first) ignores it.
    """
    inputs = {name: parsed[name] for name in MODEL_INPUTS}
    labels = {level_name(k): parsed[label_feature(k)] for k in range(1, LEVELS + 1)}
    weights = {level_name(k): parsed[weight_feature(k)] for k in range(1, LEVELS + 1)}
    return inputs, labels, weights


def make_dataset(files: list[str], batch_size: int, *, shuffle_buffer: int = 0, seed: int = 0,
                 repeat: bool = False, num_shards: int = 1, shard_index: int = 0) -> tf.data.Dataset:
    """Batched model examples from TFRecord files.

    Args:
        batch_size: examples per batch (per replica when called from a distributed input fn).
        shuffle_buffer: shuffle with this buffer (reshuffled every pass); 0 keeps file order.
        repeat: repeat forever (multi-worker training runs a fixed number of steps per epoch).
        num_shards, shard_index: keep every `num_shards`-th record starting at `shard_index`, so
            each worker reads its own share whatever the number of files.
    """
    spec = feature_spec()
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    if num_shards > 1:
        dataset = dataset.shard(num_shards, shard_index)
    if shuffle_buffer:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size).map(
        lambda serialized: to_model_example(tf.io.parse_example(serialized, spec)),
        num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def array_dataset(arrays: Mapping[str, np.ndarray], batch_size: int, *, shuffle_buffer: int = 0,
                  seed: int = 0, repeat: bool = False) -> tf.data.Dataset:
    """Batched model examples from in-memory feature arrays (the names `make_dataset` parses), for
    training on a subset of products held in memory, like the cross-fitted networks of tuning."""
    spec = feature_spec()
    dataset = tf.data.Dataset.from_tensor_slices({name: np.asarray(arrays[name]) for name in spec
                                                  if name in arrays})
    if shuffle_buffer:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    return dataset.batch(batch_size).map(to_model_example).prefetch(tf.data.AUTOTUNE)


def read_arrays(files: list[str], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Whole features of small splits as numpy arrays (validation metrics, model card)."""
    spec = feature_spec()
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(4096)
    parts: dict[str, list] = {name: [] for name in names}
    for serialized in dataset:
        parsed = tf.io.parse_example(serialized, {name: spec[name] for name in names})
        for name in names:
            parts[name].append(parsed[name].numpy())
    return {name: np.concatenate(chunks) if chunks else np.zeros((0,)) for name, chunks in parts.items()}


def class_labels(arrays: Mapping[str, np.ndarray], depth: int) -> np.ndarray:
    """int64[N, depth]: the `label_level_k` features of `read_split` arrays side by side."""
    return np.stack([arrays[label_feature(k)] for k in range(1, depth + 1)], axis=1).astype(np.int64)


def model_inputs(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model inputs (features.MODEL_INPUTS) of a dict of feature arrays."""
    return {name: arrays[name] for name in MODEL_INPUTS}


def decode_strings(values: np.ndarray) -> np.ndarray:
    """TFRecord string features (bytes) as Python strings."""
    return np.array([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values], dtype=object)


def read_split(data_dir: str | Path, split: str, embeddings: bool = True,
               weights: bool = False) -> dict[str, np.ndarray]:
    """Ids, labels (gpt_id and `label_level_k`), store and language, unless `embeddings` is False the
    model inputs, and with `weights` the `weight_level_k` features, of one training-data split."""
    names = ("product_id", "gpt_id", "store", "lang") + tuple(label_feature(k) for k in range(1, LEVELS + 1))
    names += MODEL_INPUTS if embeddings else ()
    names += tuple(weight_feature(k) for k in range(1, LEVELS + 1)) if weights else ()
    arrays = read_arrays(split_files(data_dir, split), names)
    for name in ("product_id", "store", "lang"):
        arrays[name] = decode_strings(arrays[name])
    arrays["gpt_id"] = arrays["gpt_id"].astype(np.int64)
    return arrays


def read_splits(data_dir: str | Path, splits: tuple[str, ...] | list[str], embeddings: bool = True,
                weights: bool = False) -> dict[str, np.ndarray]:
    """`read_split` of several splits as one set of arrays in a canonical order (by product_id): Beam
    writes a split's shards in any order, and a network trained on the same examples in another order
    is another network, so two builds of the same data would train two models."""
    parts = [read_split(data_dir, split, embeddings, weights) for split in splits]
    arrays = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    order = np.argsort(arrays["product_id"].astype(str), kind="stable")
    return {name: values[order] for name, values in arrays.items()}


def scaled_weights(arrays: Mapping[str, np.ndarray], factors: np.ndarray) -> dict[str, np.ndarray]:
    """The arrays with every `weight_level_k` multiplied by a factor per example (e.g. down-weighting
    labels an audit doubts; 0 drops the example from the loss).

    Raises:
        DataError: the arrays have no weights, or factors are not one non-negative number per example.
    """
    factors = np.asarray(factors, np.float32)
    n = len(arrays["gpt_id"])
    if factors.shape != (n,) or not np.all(np.isfinite(factors)) or (factors < 0).any():
        raise DataError(f"need one finite factor >= 0 per example ({n}), got shape {factors.shape}")
    names = [weight_feature(k) for k in range(1, LEVELS + 1)]
    if any(name not in arrays for name in names):
        raise DataError("these arrays were read without weights (read_split(..., weights=True))")
    return {**arrays, **{name: arrays[name] * factors for name in names}}
