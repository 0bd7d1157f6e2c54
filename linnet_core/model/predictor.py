"""`Predictor(model_dir)`: the exported inference model for Python callers (scoring, evaluation,
threshold tuning), batched over numpy arrays. Decoding and thresholds run inside the SavedModel."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import tensorflow as tf

from linnet_core.calibration.thresholds import Thresholds, load_thresholds
from linnet_core.features import INPUT_SHAPES, LEVELS, MODEL_INPUTS
from linnet_core.model import calibration_path
from linnet_core.model.export import SAVED_MODEL, read_model_json
from linnet_core.model.inference_model import STORE_CONTEXT_INPUT, STORE_EVIDENCE
from linnet_core.store_context import store_contexts
from linnet_core.taxonomy import Taxonomy

DEFAULT_BATCH = 1024


class TaxonomyMismatchError(ValueError):
    """The caller's taxonomy is not the one the model was trained on (fingerprints differ)."""


class Predictor:
    """The inference SavedModel of a model directory, loaded once.

    Args:
        model_dir: a directory `linnet train` wrote (saved_model/, model.json, calibration.json).
        taxonomy: when given, refuse it unless its fingerprint equals the model's.
        batch_size: rows per SavedModel call.

    Raises:
        TaxonomyMismatchError: the taxonomy differs from the model's.
        ModelDirError: model_dir lacks model.json.
    """

    def __init__(self, model_dir: str | Path, taxonomy: Taxonomy | None = None,
                 batch_size: int = DEFAULT_BATCH) -> None:
        self.model_dir = Path(model_dir)
        self.info = read_model_json(self.model_dir)
        self._model = tf.saved_model.load(str(self.model_dir / SAVED_MODEL))
        self.metadata = {
            name: value.decode() if isinstance(value, bytes) else value
            for name, value in ((k, v.numpy()) for k, v in self._model.signatures["metadata"]().items())
        }
        self.batch_size = batch_size
        self.thresholds: Thresholds = load_thresholds(calibration_path(self.model_dir))
        if taxonomy is not None:
            self.check_taxonomy(taxonomy)

    @property
    def taxonomy_fingerprint(self) -> str:
        return self.metadata["taxonomy_fingerprint"]

    @property
    def model_version(self) -> str:
        return self.metadata["model_version"]

    @property
    def thresholds_version(self) -> str:
        return self.metadata["thresholds_version"]

    def check_taxonomy(self, taxonomy: Taxonomy) -> None:
        """Raise TaxonomyMismatchError unless `taxonomy` is the tree the model's classes index."""
        if taxonomy.fingerprint != self.taxonomy_fingerprint:
            raise TaxonomyMismatchError(
                f"model {self.model_version} in {self.model_dir} was trained on taxonomy "
                f"{self.metadata['taxonomy_version']} (fingerprint {self.taxonomy_fingerprint}); "
                f"got taxonomy {taxonomy.version} (fingerprint {taxonomy.fingerprint}) "
                f"from {taxonomy.source}")

    @property
    def store_context_width(self) -> int:
        """Width of the store context vector (linnet_core.store_context.ContextLayout)."""
        return int(self.metadata["store_context_width"])

    def predict(self, inputs: Mapping[str, np.ndarray], decoding: str | None = None,
                thresholds: np.ndarray | list[float] | None = None, use_overrides: bool = True,
                fused: bool = True, store_context: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Decoded paths and thresholded predictions (the SavedModel's outputs) for N products.

        Args:
            inputs: the model inputs by name (features.MODEL_INPUTS), float32 [N, *INPUT_SHAPES[name]].
            store_context: float32[N, store_context_width], each product's store context
                (`pipelines.store_context`); None: no context (zeros).
            decoding: "exact" or "greedy"; None takes the model's default.
            thresholds: 7 per-level thresholds; None takes the baked ones.
            use_overrides: apply the baked per-node floors.
            fused: False decodes the network's logits alone (temperature 1, no evidence).

        Returns:
            level_ids int64[N, 7], level_confidences float32[N, 7], gpt_id int64[N], depth int32[N],
            decision int32[N], decoding bytes[N].
        """
        if decoding is None and thresholds is None and use_overrides and fused:
            signature = self._model.signatures["serving_default"]
            extra = {}
        else:
            signature = self._model.signatures["decode"]
            levels = self.metadata["thresholds"] if thresholds is None else thresholds
            extra = {
                "decoding": tf.constant(decoding or self.metadata["default_decoding"]),
                "thresholds": tf.constant(np.asarray(levels, np.float32).reshape(LEVELS)),
                "use_overrides": tf.constant(bool(use_overrides)),
                "fused": tf.constant(bool(fused)),
            }
        arrays = check_inputs(inputs)
        n = len(arrays[MODEL_INPUTS[0]])
        context = (np.zeros((n, self.store_context_width), np.float32) if store_context is None
                   else np.asarray(store_context, np.float32))
        if context.shape != (n, self.store_context_width):
            raise ValueError(f"store_context must have shape [{n}, {self.store_context_width}], "
                             f"got {context.shape}")
        return self._run(signature, {**arrays, STORE_CONTEXT_INPUT: context}, extra)

    def predict_in_stores(self, inputs: Mapping[str, np.ndarray], stores: np.ndarray, **options
                          ) -> dict[str, np.ndarray]:
        """`predict` with each product's store context taken from the other products of its store among
        these (leave-one-out), as a batch of a store's products is scored; `options` as `predict`."""
        context = store_contexts(self.store_evidence(inputs), stores)
        return self.predict(inputs, store_context=context, **options)

    def store_evidence(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """float32[N, store_context_width]: each product's contribution to its store's context."""
        return self._batched(self._model.signatures[STORE_EVIDENCE], inputs, {})[STORE_EVIDENCE]

    def level_probabilities(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per-level calibrated softmax over all classes of each level: `level_k` → float32[N, n_k]."""
        return self._batched(self._model.signatures["level_probabilities"], inputs, {})

    def level_logits(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per-level raw logits (before temperatures and evidence): `level_k` → float32[N, n_k]."""
        return self._batched(self._model.signatures["level_logits"], inputs, {})

    def level_evidence(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every evidence per level, `<evidence>_level_k` → float32[N, n_k] (zeros where the model lacks
        it; inference_model.evidence_output names them)."""
        return self._batched(self._model.signatures["level_evidence"], inputs, {})

    @property
    def evidence(self) -> tuple[str, ...]:
        """The evidence this model has (thresholds.EVIDENCE names)."""
        return tuple(name for name in self.metadata["evidence"].split(",") if name)

    def _batched(self, signature, inputs: Mapping[str, np.ndarray], extra: dict) -> dict:
        return self._run(signature, check_inputs(inputs), extra)

    def _run(self, signature, arrays: Mapping[str, np.ndarray], extra: dict) -> dict:
        """The signature over checked float32 arrays, `batch_size` rows a call."""
        n = len(arrays[MODEL_INPUTS[0]])
        parts: dict[str, list[np.ndarray]] = {}
        for start in range(0, max(n, 1), self.batch_size):
            stop = start + self.batch_size
            outputs = signature(**{name: tf.constant(array[start:stop]) for name, array in arrays.items()},
                                **extra)
            for name, value in outputs.items():
                parts.setdefault(name, []).append(value.numpy())
        return {name: np.concatenate(chunks) for name, chunks in parts.items()}

    def describe(self) -> str:
        """One line for logs: versions and the default decoding."""
        return json.dumps({k: self.metadata[k] for k in (
            "model_version", "taxonomy_version", "taxonomy_fingerprint", "thresholds_version",
            "default_decoding")})


def check_inputs(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model inputs (features.MODEL_INPUTS) as float32 arrays of their shapes, e.g. [N, 384].

    Raises:
        ValueError: a missing input, a wrong shape, disagreeing N, or non-finite values (naming the first
            bad rows), rather than letting NaNs decode into arbitrary paths.
    """
    missing = [name for name in MODEL_INPUTS if name not in inputs]
    if missing:
        raise ValueError(f"missing model inputs {missing}; the model takes {list(MODEL_INPUTS)}")
    arrays = {name: np.asarray(inputs[name], np.float32) for name in MODEL_INPUTS}
    for name, array in arrays.items():
        if array.shape[1:] != INPUT_SHAPES[name]:
            raise ValueError(f"{name} must have shape [N, *{INPUT_SHAPES[name]}], got {array.shape}")
    counts = {len(array) for array in arrays.values()}
    if len(counts) != 1:
        raise ValueError(f"inputs disagree on the number of products: "
                         f"{ {name: len(array) for name, array in arrays.items()} }")
    for name, array in arrays.items():
        finite = np.isfinite(array)
        bad = np.flatnonzero(~(finite.all(axis=1) if array.ndim > 1 else finite))
        if len(bad):
            raise ValueError(f"{name} has non-finite values in {len(bad)} rows, first {bad[:5].tolist()}")
    return arrays
