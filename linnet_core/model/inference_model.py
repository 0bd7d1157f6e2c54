"""The inference model: the trained network plus decoding and thresholds, as one tf.Module.

Saved with tf.saved_model.save, it needs neither the project's code nor Keras to run: the taxonomy
tables, category embeddings (the taxonomy prior), thresholds, temperatures, prior weights and versions
are constants inside its graph.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras

from linnet_core.category_prior import CategoryEmbeddings
from linnet_core.features import (
    IMAGE_DIM,
    IMAGE_EMBEDDING,
    IMAGE_PRESENT,
    LEVELS,
    TEXT_DIM,
    TEXT_EMBEDDING,
)
from linnet_core.model import decoding
from linnet_core.model.data import level_name
from linnet_core.taxonomy import Taxonomy
from linnet_core.thresholds import Thresholds

EMBEDDING_SIGNATURE = (
    tf.TensorSpec([None, TEXT_DIM], tf.float32, name=TEXT_EMBEDDING),
    tf.TensorSpec([None, IMAGE_DIM], tf.float32, name=IMAGE_EMBEDDING),
    tf.TensorSpec([None], tf.float32, name=IMAGE_PRESENT),
)
DECODE_SIGNATURE = EMBEDDING_SIGNATURE + (
    tf.TensorSpec([], tf.string, name="decoding"),
    tf.TensorSpec([LEVELS], tf.float32, name="thresholds"),
    tf.TensorSpec([], tf.bool, name="use_overrides"),
)


class InferenceModel(tf.Module):
    """Embeddings in; decoded path, confidences, thresholded prediction out (docs/ARCHITECTURE.md).

    Signatures once saved: `serving_default` (baked thresholds, default decoding), `decode` (decoding
    mode, per-level thresholds and use_overrides chosen per call), `level_probabilities` (calibrated
    per-level softmax), `level_logits` (raw logits, for temperature fitting), `level_priors` (the
    taxonomy prior P_k, for fitting its weights; zeros without category embeddings) and `metadata`.
    """

    def __init__(self, network: tf_keras.Model, taxonomy: Taxonomy, thresholds: Thresholds,
                 model_version: str, default_decoding: str = decoding.EXACT,
                 category_embeddings: CategoryEmbeddings | None = None) -> None:
        """Raises ValueError: unknown decoding, or prior weights > 0 without category embeddings;
        CategoryEmbeddingsError: embeddings of another taxonomy."""
        super().__init__(name="linnet_inference")
        if default_decoding not in decoding.MODES:
            raise ValueError(f"default_decoding must be one of {decoding.MODES}, got {default_decoding!r}")
        if any(thresholds.prior_weights) and category_embeddings is None:
            raise ValueError(f"thresholds {thresholds.version} weigh a taxonomy prior "
                             f"{list(thresholds.prior_weights)} but the model has no category embeddings")
        self.network = network
        self._tables = decoding.DecodingTables.build(taxonomy, thresholds.overrides)
        self._prior = (decoding.PriorTables.build(taxonomy, category_embeddings)
                       if category_embeddings is not None else None)
        self._thresholds = decoding.thresholds_vector(thresholds, "levels")
        self._temperatures = decoding.thresholds_vector(thresholds, "temperatures")
        self._prior_weights = decoding.thresholds_vector(thresholds, "prior_weights")
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
            "prior_weights": self._prior_weights,
            "category_encoder_id": category_embeddings.encoder_id if category_embeddings is not None else "",
            "level_sizes": np.array(sizes, np.int32),
        }

    def _logits(self, text_embedding, image_embedding, image_present) -> list[tf.Tensor]:
        outputs = self.network({TEXT_EMBEDDING: text_embedding, IMAGE_EMBEDDING: image_embedding,
                                IMAGE_PRESENT: image_present}, training=False)
        return [outputs[level_name(k)] for k in range(1, self._tables.depth + 1)]

    def _priors(self, text_embedding) -> list[tf.Tensor] | None:
        return decoding.taxonomy_priors(text_embedding, self._prior) if self._prior is not None else None

    def _fusion(self, text_embedding) -> dict:
        """The prior arguments of the decoding functions (none without category embeddings)."""
        if self._prior is None:
            return {}
        return {"priors": self._priors(text_embedding), "prior_weights": tf.constant(self._prior_weights)}

    @tf.function(input_signature=EMBEDDING_SIGNATURE)
    def serving_default(self, text_embedding, image_embedding, image_present):
        """Decode with the baked defaults."""
        return decoding.decode(self._logits(text_embedding, image_embedding, image_present), self._tables,
                               tf.constant(self._temperatures), tf.constant(self._default_decoding),
                               tf.constant(self._thresholds), tf.constant(True),
                               **self._fusion(text_embedding))

    @tf.function(input_signature=DECODE_SIGNATURE)
    def decode(self, text_embedding, image_embedding, image_present, decoding_mode, thresholds,
               use_overrides):
        """Decode with a decoding mode ("exact"/"greedy") and thresholds chosen by the caller."""
        return decoding.decode(self._logits(text_embedding, image_embedding, image_present), self._tables,
                               tf.constant(self._temperatures), decoding_mode, thresholds, use_overrides,
                               **self._fusion(text_embedding))

    @tf.function(input_signature=EMBEDDING_SIGNATURE)
    def level_probabilities(self, text_embedding, image_embedding, image_present):
        """Per-level softmax of the fused logits (temperatures and prior), over all classes of the level."""
        logits = self._logits(text_embedding, image_embedding, image_present)
        probs = decoding.level_probabilities(logits, tf.constant(self._temperatures),
                                             **self._fusion(text_embedding))
        return {level_name(k + 1): p for k, p in enumerate(probs)}

    @tf.function(input_signature=EMBEDDING_SIGNATURE)
    def level_logits(self, text_embedding, image_embedding, image_present):
        """Per-level raw logits (before temperatures), for calibration."""
        logits = self._logits(text_embedding, image_embedding, image_present)
        return {level_name(k + 1): z for k, z in enumerate(logits)}

    @tf.function(input_signature=EMBEDDING_SIGNATURE)
    def level_priors(self, text_embedding, image_embedding, image_present):
        """Per-level taxonomy prior P_k (subtree-max cosine to the category embeddings), for fitting λ_k;
        zeros when the model has no category embeddings."""
        priors = self._priors(text_embedding)
        if priors is None:
            logits = self._logits(text_embedding, image_embedding, image_present)
            priors = [tf.zeros_like(z) for z in logits]
        return {level_name(k + 1): p for k, p in enumerate(priors)}

    @tf.function(input_signature=[])
    def metadata(self):
        """Versions, the taxonomy fingerprint and the baked thresholds, temperatures, prior weights,
        the category encoder id and the level sizes."""
        return {name: tf.constant(value) for name, value in self._metadata.items()}

    def save(self, directory: str) -> None:
        """Write the SavedModel with all signatures."""
        signatures = {
            "serving_default": self.serving_default,
            "decode": self.decode.get_concrete_function(),
            "level_probabilities": self.level_probabilities,
            "level_logits": self.level_logits,
            "level_priors": self.level_priors,
            "metadata": self.metadata,
        }
        tf.saved_model.save(self, directory, signatures=signatures)
