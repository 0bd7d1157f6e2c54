"""Small training-data directories in the layout of `linnet build-training-data`, for model tests.

Embeddings are random but learnable: each label node has a prototype text vector and examples are
noisy copies of it (their title vectors other noisy copies). Labels are real taxonomy nodes (leaves
and inner nodes), encoded with the feature spec of schemas/training_features.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from linnet_core.features import IMAGE_DIM, LEVELS, TEXT_DIM
from linnet_core.model.data import feature_spec
from linnet_core.taxonomy import Taxonomy
from linnet_core.training_data import CLASS_WEIGHTS, DEFAULT_STORE_CAP


def _feature(value, dtype: tf.DType) -> tf.train.Feature:
    values = np.atleast_1d(value)
    if dtype == tf.string:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(v).encode() for v in values]))
    if dtype == tf.int64:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def write_training_data(directory: Path, taxonomy: Taxonomy, sizes: dict[str, int] | None = None,
                        num_labels: int = 30, files_per_split: int = 2, seed: int = 0) -> list[int]:
    """Write DATA/{train,validation,calibration}/part-*.tfrecord.gz; returns the label node ids."""
    sizes = sizes or {"train": 400, "validation": 100, "calibration": 100}
    rng = np.random.default_rng(seed)
    nodes = sorted(node.id for node in taxonomy)
    labels = [int(i) for i in rng.choice(nodes, size=min(num_labels, len(nodes)), replace=False)]
    prototypes = {label: rng.normal(size=TEXT_DIM) for label in labels}
    spec = feature_spec()
    for split, size in sizes.items():
        folder = Path(directory, split)
        folder.mkdir(parents=True, exist_ok=True)
        writers = [tf.io.TFRecordWriter(str(folder / f"part-{i:05d}-of-{files_per_split:05d}.tfrecord.gz"),
                                        options="GZIP") for i in range(files_per_split)]
        for n in range(size):
            gpt_id = labels[int(rng.integers(len(labels)))]
            text = prototypes[gpt_id] + 0.7 * rng.normal(size=TEXT_DIM)
            title = prototypes[gpt_id] + 0.7 * rng.normal(size=TEXT_DIM)
            present = float(rng.random() < 0.3)
            level_labels = taxonomy.level_labels(gpt_id)
            values = {
                "product_id": f"{split}-{n}", "store": f"store-{n % 7}", "lang": "en",
                "text_embedding": text / np.linalg.norm(text),
                "title_embedding": title / np.linalg.norm(title),
                "image_embedding": present * np.abs(rng.normal(size=IMAGE_DIM)),
                "image_present": present, "gpt_id": gpt_id,
            }
            for level in range(1, LEVELS + 1):
                label = level_labels[level - 1] if level <= len(level_labels) else -1
                values[f"label_level_{level}"] = label
                values[f"weight_level_{level}"] = 1.0 if label >= 0 else 0.0
            example = tf.train.Example(features=tf.train.Features(
                feature={name: _feature(values[name], spec[name].dtype) for name in spec}))
            writers[n % files_per_split].write(example.SerializeToString())
        for writer in writers:
            writer.close()
    # What the model reads of class_weights.json: the store cap the example weights were built with.
    Path(directory, CLASS_WEIGHTS).write_text(json.dumps({"store_cap": DEFAULT_STORE_CAP}), encoding="utf-8")
    return labels
