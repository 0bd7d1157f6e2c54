"""tf.Transform of the training data: per-level class weights learned from the train split, raw
features passed through, and the Arrow layout TFT is fed with.

TFT is fed Arrow RecordBatches (not instance dicts, whose protobuf coder crashes the interpreter at
exit here) and its output is encoded with tfx_bsl. Importing this module imports
tensorflow_transform, which switches `tf.keras` to Keras 2: never write `tf.keras` near it. No Beam
here: the pipeline owns the Beam side of TFT.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import tensorflow as tf
import tensorflow.experimental.numpy as tnp
import tensorflow_transform as tft
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils
from tfx_bsl.tfxio import tensor_representation_util
from tfx_bsl.tfxio.tensor_adapter import TensorAdapterConfig

from linnet_core.features import label_feature, weight_feature
from linnet_core.model.data import feature_spec
from linnet_core.training_data import WeightConfig, class_weights, store_factors

_ARROW_VALUES = {tf.float32: pa.float32(), tf.int64: pa.int64(), tf.string: pa.large_binary()}
_NUMPY_VALUES = {tf.float32: np.float32, tf.int64: np.int64}


def raw_feature_spec() -> dict[str, tf.io.FixedLenFeature]:
    """The raw features of `schemas/training_features.json` (what TFT reads)."""
    return feature_spec(include_weights=False)


def raw_schema() -> schema_pb2.Schema:
    """The TFMD schema of the raw features, with tensor representations for the TFXIO adapter."""
    schema = schema_utils.schema_from_feature_spec(raw_feature_spec())
    representations = tensor_representation_util.InferTensorRepresentationsFromSchema(schema)
    tensor_representation_util.SetTensorRepresentationsInSchema(schema, representations)
    return schema


def raw_metadata() -> dataset_metadata.DatasetMetadata:
    """Raw-data metadata; written beside `transform_fn/` so `TFTransformOutput.raw_feature_spec()`
    works on the output."""
    return dataset_metadata.DatasetMetadata(raw_schema())


def arrow_schema() -> pa.Schema:
    """Arrow layout of raw RecordBatches: one list column per feature, as TFXIO decodes tf.Examples."""
    return pa.schema([(name, pa.large_list(_ARROW_VALUES[spec.dtype]))
                      for name, spec in raw_feature_spec().items()])


def tensor_adapter_config() -> TensorAdapterConfig:
    """How TFT turns the raw RecordBatches into tensors (the TFXIO adapter of `arrow_schema`)."""
    return TensorAdapterConfig(
        arrow_schema(), tensor_representation_util.GetTensorRepresentationsFromSchema(raw_schema()))


def to_record_batch(examples: Sequence[Mapping[str, Any]]) -> pa.RecordBatch:
    """Raw example dicts (`training_data.to_example`) → one RecordBatch in `arrow_schema` layout.

    Raises:
        ValueError: a feature whose values do not have the spec's shape.
    """
    columns = []
    for name, spec in raw_feature_spec().items():
        width = int(np.prod(spec.shape)) if spec.shape else 1
        values = [example[name] for example in examples]
        if spec.dtype == tf.string:
            flat = pa.array([str(v).encode("utf-8") for v in values], pa.large_binary())
        else:
            array = np.asarray(values, dtype=_NUMPY_VALUES[spec.dtype]).reshape(-1)
            if array.size != width * len(examples):
                raise ValueError(f"feature {name}: {array.size} values for {len(examples)} examples "
                                 f"of shape {spec.shape}")
            flat = pa.array(array)
        offsets = pa.array(np.arange(0, width * len(examples) + 1, width, dtype=np.int64))
        columns.append(pa.LargeListArray.from_arrays(offsets, flat))
    return pa.RecordBatch.from_arrays(columns, schema=arrow_schema())


def _level_weights(labels: tf.Tensor, size: int, config: WeightConfig) -> tf.Tensor:
    """Each example's class weight at one level; 0 where the label is `NO_LABEL` (-1)."""
    counts = tft.sum(tf.one_hot(labels, size, dtype=tf.float32), reduce_instance_dims=False)
    table = tf.cast(class_weights(counts, config, xp=tnp), tf.float32)
    labelled = labels >= 0
    return tf.where(labelled, tf.gather(table, tf.where(labelled, labels, 0)), 0.0)


def _store_factors(stores: tf.Tensor, config: WeightConfig) -> tf.Tensor:
    """Each example's store factor, min(1, store_cap / n_store), n_store counted on the analysed data
    (`tft.count_per_key`); a store it lacks counts 0 (factor 1)."""
    if config.store_cap is None:
        return tf.ones(tf.shape(stores), tf.float32)
    keys, counts = tft.count_per_key(stores)
    # Stores are few (tens to thousands), so a dense match needs no lookup table in the graph.
    matches = tf.equal(stores[:, tf.newaxis], keys[tf.newaxis, :])
    n_store = tf.reduce_sum(tf.where(matches, counts[tf.newaxis, :], tf.zeros_like(counts)[tf.newaxis, :]),
                            axis=1)
    return tf.cast(store_factors(n_store, config.store_cap, xp=tnp), tf.float32)


def make_preprocessing_fn(level_sizes: Sequence[int], config: WeightConfig) -> Callable:
    """The TFT `preprocessing_fn`: raw features unchanged plus `weight_level_k` per level.

    weight_level_k = class weight of the level-k label × the example's store factor
    (`training_data.store_factors`). Per-level class counts are a `tft.sum` over one-hot labels and
    store counts a `tft.count_per_key` of the analysed (train) data, so validation and calibration
    examples get the weights learned on train. Embeddings are left raw: the serving SavedModel takes
    raw embeddings, so normalizing them here would skew train and serve.

    Args:
        level_sizes: classes per level in class-index order (`training_data.level_sizes`).
        config: class-weight formula parameters.
    """
    def preprocessing_fn(inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        outputs = dict(inputs)
        with tf.name_scope("store_factors"):
            factors = _store_factors(tf.reshape(inputs["store"], [-1]), config)
        for level, size in enumerate(level_sizes, start=1):
            with tf.name_scope(f"class_weights_level_{level}"):
                outputs[weight_feature(level)] = factors * _level_weights(
                    inputs[label_feature(level)], max(size, 1), config)
        return outputs

    return preprocessing_fn

