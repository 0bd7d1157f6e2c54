"""The multi-task training model: shared layers, then one softmax head per taxonomy level.

The level-k head (k > 1) reads the shared representation concatenated with level k-1's softmax, as
published. Heads output logits (softmax lives in the loss and in the inference model, where
temperatures apply). Written with tf_keras (Keras 2) because Keras 3's `fit` fails under
MultiWorkerMirroredStrategy (docs/training.md); never `tf.keras`, which changes meaning when
tensorflow_transform is imported.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras

from linnet_core.features import (
    IMAGE_EMBEDDING,
    IMAGE_PRESENT,
    INPUT_SHAPES,
    MODEL_INPUTS,
    TEXT_EMBEDDING,
    TITLE_EMBEDDING,
)
from linnet_core.model.config import ModelConfig
from linnet_core.model.data import level_name


def build_training_model(config: ModelConfig, level_sizes: list[int]) -> tf_keras.Model:
    """The Keras model: inputs named like the features, outputs `level_1..level_D` logits.

    Args:
        config: layer widths and dropout.
        level_sizes: number of classes per level (Taxonomy.level_sizes()).
    """
    inputs = {name: tf_keras.Input(INPUT_SHAPES[name], name=name) for name in MODEL_INPUTS}
    # MobileNet features have norms ~25 against the text embeddings' 1: unit-normalise so that
    # neither modality drowns the other (a zero vector, no image, stays zero).
    image_unit = tf_keras.layers.UnitNormalization(name="image_unit")(inputs[IMAGE_EMBEDDING])
    present = tf_keras.layers.Reshape((1,), name="image_present_column")(inputs[IMAGE_PRESENT])
    hidden = tf_keras.layers.Concatenate(name="embeddings")(
        [inputs[TEXT_EMBEDDING], inputs[TITLE_EMBEDDING], image_unit, present])
    regularizer = tf_keras.regularizers.L2(config.l2) if config.l2 else None
    for i, units in enumerate(config.shared_units):
        hidden = _dense_block(hidden, units, config.dropout, regularizer, f"shared_{i}")
    outputs = {}
    previous = None
    for level, size in enumerate(level_sizes, start=1):
        head = hidden
        if previous is not None:
            parent_probs = tf_keras.layers.Softmax(name=f"level_{level - 1}_softmax")(previous)
            head = tf_keras.layers.Concatenate(name=f"level_{level}_input")([hidden, parent_probs])
        for i, units in enumerate(config.level_units):
            head = _dense_block(head, units, config.dropout, regularizer, f"level_{level}_hidden_{i}")
        previous = tf_keras.layers.Dense(size, kernel_regularizer=regularizer, name=level_name(level))(head)
        outputs[level_name(level)] = previous
    return tf_keras.Model(inputs=[inputs[name] for name in MODEL_INPUTS], outputs=outputs,
                          name="linnet_levels")


def _dense_block(inputs: tf.Tensor, units: int, dropout: float,
                 regularizer: tf_keras.regularizers.Regularizer | None, name: str) -> tf.Tensor:
    hidden = tf_keras.layers.Dense(units, activation="relu", kernel_regularizer=regularizer,
                                   name=name)(inputs)
    return tf_keras.layers.Dropout(dropout, name=f"{name}_dropout")(hidden) if dropout else hidden


class MaskedSparseCrossentropy(tf_keras.losses.Loss):
    """Sparse softmax cross-entropy on logits that accepts label -1 (no label at this level).

    The -1 labels are clipped to class 0 only to keep the op valid; their sample weight is 0
    (weight_level_k from tf.Transform), so they add nothing to the loss.
    """

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        labels = tf.maximum(tf.cast(tf.reshape(y_true, [-1]), tf.int32), 0)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=y_pred)


class MaskedAccuracy(tf_keras.metrics.Mean):
    """Accuracy over the examples that have a label at this level (label >= 0), unweighted."""

    def __init__(self, name: str = "accuracy", **kwargs) -> None:
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true: tf.Tensor, y_pred: tf.Tensor, sample_weight: tf.Tensor | None = None):
        labels = tf.cast(tf.reshape(y_true, [-1]), tf.int64)
        correct = tf.cast(tf.equal(tf.argmax(y_pred, axis=-1), labels), tf.float32)
        return super().update_state(correct, sample_weight=tf.cast(labels >= 0, tf.float32))


def compile_training_model(model: tf_keras.Model, config: ModelConfig) -> None:
    """Adam, per-level masked losses summed with `config.loss_weights`, per-level masked accuracy."""
    names = [level_name(level) for level in range(1, len(model.outputs) + 1)]
    model.compile(
        optimizer=tf_keras.optimizers.Adam(config.learning_rate),
        loss={name: MaskedSparseCrossentropy(name=f"{name}_loss") for name in names},
        loss_weights={name: config.loss_weights[i] for i, name in enumerate(names)},
        metrics={name: [MaskedAccuracy()] for name in names},
        weighted_metrics=[],
    )
