"""The inference model: the trained network plus decoding and thresholds, as one tf.Module.

Saved with tf.saved_model.save, it needs neither the project's code nor Keras to run: the taxonomy
tables, category embeddings (the taxonomy prior), the exemplar memory, thresholds, temperatures,
evidence weights and versions are constants inside its graph.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras

from linnet_core.calibration.thresholds import (
    EVIDENCE,
    EXEMPLAR_SHARES,
    PRODUCT_EVIDENCE,
    STORE_CONTEXT,
    TEXT_PRIOR,
    TITLE_PRIOR,
    Thresholds,
)
from linnet_core.category_prior import CategoryEmbeddings
from linnet_core.exemplars import Exemplars
from linnet_core.features import INPUT_SHAPES, LEVELS, MODEL_INPUTS
from linnet_core.model import decoding, evidence
from linnet_core.model.data import level_name
from linnet_core.store_context import ContextLayout
from linnet_core.taxonomy import Taxonomy

STORE_CONTEXT_INPUT = "store_context"
STORE_EVIDENCE = "store_evidence"
EMBEDDING_SIGNATURE = tuple(tf.TensorSpec([None, *INPUT_SHAPES[name]], tf.float32, name=name)
                            for name in MODEL_INPUTS)
# The store context of each product (linnet_core.store_context; zeros: none), float32[B, context width].
CONTEXT_SPEC = tf.TensorSpec([None, None], tf.float32, name=STORE_CONTEXT_INPUT)
SERVING_SIGNATURE = EMBEDDING_SIGNATURE + (CONTEXT_SPEC,)
DECODE_SIGNATURE = SERVING_SIGNATURE + (
    tf.TensorSpec([], tf.string, name="decoding"),
    tf.TensorSpec([LEVELS], tf.float32, name="thresholds"),
    tf.TensorSpec([], tf.bool, name="use_overrides"),
    tf.TensorSpec([], tf.bool, name="fused"),
)


def evidence_output(name: str, level: int) -> str:
    """Output name of evidence `name` at `level` in the `level_evidence` signature."""
    return f"{name}_{level_name(level)}"


class InferenceModel(tf.Module):
    """Embeddings in; decoded path, confidences, thresholded prediction out (docs/ARCHITECTURE.md).

    Signatures once saved: `serving_default` (baked thresholds, default decoding; embeddings and the
    store context in), `decode` (decoding mode, per-level thresholds, use_overrides and fused chosen per
    call; fused False decodes the network's own logits, the published design), `store_evidence` (a
    product's contribution to its store's context, from the first pass), `level_probabilities` (the
    first pass's per-level softmax), `level_logits` (raw logits), `level_evidence` (each product
    evidence per level, zeros where the model lacks it; with the logits, what fusion weights are fit
    on) and `metadata`.
    """

    def __init__(self, network: tf_keras.Model, taxonomy: Taxonomy, thresholds: Thresholds,
                 model_version: str, default_decoding: str = decoding.EXACT,
                 category_embeddings: CategoryEmbeddings | None = None,
                 exemplars: Exemplars | None = None) -> None:
        """Raises ValueError: unknown decoding, or weight on evidence the model lacks;
        CategoryEmbeddingsError / ExemplarsError: evidence of another taxonomy."""
        super().__init__(name="linnet_inference")
        if default_decoding not in decoding.MODES:
            raise ValueError(f"default_decoding must be one of {decoding.MODES}, got {default_decoding!r}")
        self.network = network
        self._tables = decoding.DecodingTables.build(taxonomy, thresholds.overrides)
        self._prior = (evidence.PriorTables.build(taxonomy, category_embeddings)
                       if category_embeddings is not None else None)
        self._memory = evidence.ExemplarTables.build(taxonomy, exemplars) if exemplars is not None else None
        available = {TEXT_PRIOR: self._prior is not None, TITLE_PRIOR: self._prior is not None,
                     EXEMPLAR_SHARES: self._memory is not None, STORE_CONTEXT: True}
        missing = [name for name in EVIDENCE if any(thresholds.weights(name)) and not available[name]]
        if missing:
            raise ValueError(f"thresholds {thresholds.version} weigh evidence {missing} that the model lacks "
                             f"(category embeddings: {self._prior is not None}, exemplars: "
                             f"{self._memory is not None})")
        self._evidence_names = tuple(name for name in PRODUCT_EVIDENCE if available[name])
        self._thresholds = decoding.thresholds_vector(thresholds, "levels")
        self._temperatures = decoding.thresholds_vector(thresholds, "temperatures")
        self._weights = {name: decoding.thresholds_vector(thresholds, name) for name in EVIDENCE}
        self._first_temperatures, self._first_weights = decoding.first_pass_vectors(thresholds)
        self._layout = ContextLayout.of(taxonomy.level_sizes())
        self._default_decoding = default_decoding
        sizes = taxonomy.level_sizes() + [0] * (LEVELS - taxonomy.max_depth)
        self._metadata = {
            "model_version": model_version,
            "taxonomy_version": taxonomy.version,
            "taxonomy_fingerprint": taxonomy.fingerprint,
            "thresholds_version": thresholds.version,
            "default_decoding": default_decoding,
            "thresholds": self._thresholds,
            "temperatures": self._temperatures,
            **{f"{name}_weights": weights for name, weights in self._weights.items()},
            "evidence": ",".join(self._evidence_names),
            "category_encoder_id": category_embeddings.encoder_id if category_embeddings is not None else "",
            "exemplars": np.int64(len(exemplars.weights) if exemplars is not None else 0),
            "store_context_width": np.int64(self._layout.width),
            "level_sizes": np.array(sizes, np.int32),
        }

    def _logits(self, inputs: tuple[tf.Tensor, ...]) -> list[tf.Tensor]:
        outputs = self.network(dict(zip(MODEL_INPUTS, inputs, strict=True)), training=False)
        return [outputs[level_name(k)] for k in range(1, self._tables.depth + 1)]

    def _evidence_scores(self, inputs: tuple[tf.Tensor, ...]) -> dict[str, list[tf.Tensor]]:
        return evidence.evidence_scores(dict(zip(MODEL_INPUTS, inputs, strict=True)), self._prior,
                                        self._memory)

    def _evidence(self, inputs: tuple[tf.Tensor, ...], context: tf.Tensor, fused: tf.Tensor | bool = True
                  ) -> tuple[evidence.Evidence, ...]:
        """The (scores, weights) pairs of the fused logits, store context last; weights 0 when `fused` is
        False."""
        scale = tf.cast(fused, tf.float32)
        store = evidence.context_scores(tf.reshape(context, [-1, self._layout.width]), self._layout,
                                        self._tables_sizes)
        return tuple((scores, scale * tf.constant(self._weights[name]))
                     for name, scores in self._evidence_scores(inputs).items()) + (
            (store, scale * tf.constant(self._weights[STORE_CONTEXT])),)

    @property
    def _tables_sizes(self) -> tuple[int, ...]:
        return tuple(len(ids) for ids in self._tables.node_ids)

    def _first_pass(self, inputs: tuple[tf.Tensor, ...]) -> list[tf.Tensor]:
        """Per level, the first pass's softmax: the product evidence fused without store context."""
        weighted = tuple((scores, tf.constant(self._first_weights[name]))
                         for name, scores in self._evidence_scores(inputs).items())
        return decoding.level_probabilities(self._logits(inputs), tf.constant(self._first_temperatures),
                                            weighted)

    @tf.function(input_signature=SERVING_SIGNATURE)
    def serving_default(self, text_embedding, title_embedding, image_embedding, image_present, store_context):
        """Decode with the baked defaults."""
        inputs = (text_embedding, title_embedding, image_embedding, image_present)
        return decoding.decode(self._logits(inputs), self._tables, tf.constant(self._temperatures),
                               tf.constant(self._default_decoding), tf.constant(self._thresholds),
                               tf.constant(True), self._evidence(inputs, store_context))

    @tf.function(input_signature=DECODE_SIGNATURE)
    def decode(self, text_embedding, title_embedding, image_embedding, image_present, store_context,
               decoding_mode, thresholds, use_overrides, fused):
        """Decode with a decoding mode ("exact"/"greedy"), thresholds and overrides chosen by the caller;
        `fused` False decodes the network's logits alone (temperature 1, no evidence)."""
        inputs = (text_embedding, title_embedding, image_embedding, image_present)
        temperatures = tf.where(fused, tf.constant(self._temperatures), tf.ones([LEVELS]))
        return decoding.decode(self._logits(inputs), self._tables, temperatures, decoding_mode, thresholds,
                               use_overrides, self._evidence(inputs, store_context, fused))

    @tf.function(input_signature=EMBEDDING_SIGNATURE)
    def store_evidence(self, text_embedding, title_embedding, image_embedding, image_present):
        """The product's contribution to its store's context: its first-pass probabilities at the context
        levels, all but the top few per level zeroed (linnet_core.store_context)."""
        inputs = (text_embedding, title_embedding, image_embedding, image_present)
        return {STORE_EVIDENCE: evidence.store_contributions(self._first_pass(inputs), self._layout)}

    @tf.function(input_signature=EMBEDDING_SIGNATURE)
    def level_probabilities(self, text_embedding, title_embedding, image_embedding, image_present):
        """Per-level softmax of the first pass's fused logits (no store context) over a level's classes."""
        inputs = (text_embedding, title_embedding, image_embedding, image_present)
        return {level_name(k + 1): p for k, p in enumerate(self._first_pass(inputs))}

    @tf.function(input_signature=EMBEDDING_SIGNATURE)
    def level_logits(self, text_embedding, title_embedding, image_embedding, image_present):
        """Per-level raw logits of the network (before temperatures and evidence)."""
        inputs = (text_embedding, title_embedding, image_embedding, image_present)
        return {level_name(k + 1): z for k, z in enumerate(self._logits(inputs))}

    @tf.function(input_signature=EMBEDDING_SIGNATURE)
    def level_evidence(self, text_embedding, title_embedding, image_embedding, image_present):
        """Every product evidence per level (`<evidence>_level_k`), zeros for evidence the model lacks:
        with `level_logits`, what `linnet tune-thresholds` fits temperatures and weights on."""
        inputs = (text_embedding, title_embedding, image_embedding, image_present)
        logits = self._logits(inputs)
        scores = self._evidence_scores(inputs)
        return {evidence_output(name, k + 1): scores[name][k] if name in scores else tf.zeros_like(z)
                for name in PRODUCT_EVIDENCE for k, z in enumerate(logits)}

    @tf.function(input_signature=[])
    def metadata(self):
        """Versions, the taxonomy fingerprint, the baked thresholds, temperatures and evidence weights,
        the product evidence the model has, the category encoder id, the exemplar count, the store
        context's width and the level sizes."""
        return {name: tf.constant(value) for name, value in self._metadata.items()}

    def save(self, directory: str) -> None:
        """Write the SavedModel with all signatures."""
        signatures = {
            "serving_default": self.serving_default,
            "decode": self.decode.get_concrete_function(),
            "store_evidence": self.store_evidence,
            "level_probabilities": self.level_probabilities,
            "level_logits": self.level_logits,
            "level_evidence": self.level_evidence,
            "metadata": self.metadata,
        }
        tf.saved_model.save(self, directory, signatures=signatures)
