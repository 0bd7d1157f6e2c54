"""The calibration set: for labelled products from stores the scoring networks never saw, the raw
logits per level and every evidence's scores, on which `linnet tune-thresholds` fits temperatures,
evidence weights and thresholds.

Cross-fitted (the default): the pool of train and calibration stores is cut into `folds` groups of
whole stores; for each group, a network with the model's config is trained on the other groups and an
exemplar memory is built from them, and both score the group. Every pool product is then scored as an
unseen store's product is in production, and calibration sees every training store instead of the
calibration split's few (docs/experiments/2026-11-29-title-exemplars-cross-fitting.md).
Without folds: the model itself on the calibration split.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras

from linnet_core.calibration.thresholds import STORE_CONTEXT
from linnet_core.category_prior import CATEGORY_EMBEDDINGS, CategoryEmbeddings
from linnet_core.features import LEVELS, MODEL_INPUTS
from linnet_core.model import decoding, evidence
from linnet_core.model.config import ModelConfig
from linnet_core.model.data import (
    array_dataset,
    class_labels,
    level_name,
    model_inputs,
    read_splits,
    scaled_weights,
)
from linnet_core.model.export import CONFIG_JSON
from linnet_core.model.inference_model import evidence_output
from linnet_core.progress import Progress
from linnet_core.store_context import ContextLayout, level_scores, store_contexts
from linnet_core.taxonomy import Taxonomy
from linnet_core.training_data import CALIBRATION, DEFAULT_FOLDS, TRAIN, store_folds

logger = logging.getLogger(__name__)
BATCH = 1024


@dataclass
class CalibrationSet:
    """N labelled products scored by networks that never saw their stores.

    Attributes:
        product_id, store, gpt_id: [N].
        labels: int[N, depth] the label's class index per level (-1 past its depth).
        logits: per level float32[N, n_k] raw network logits.
        evidence: per evidence the model has (thresholds.EVIDENCE order), per level float32[N, n_k].
    """

    product_id: np.ndarray
    store: np.ndarray
    gpt_id: np.ndarray
    labels: np.ndarray
    logits: list[np.ndarray]
    evidence: dict[str, list[np.ndarray]]

    @staticmethod
    def concatenate(parts: Sequence[CalibrationSet]) -> CalibrationSet:
        """One set of several with the same evidence."""
        return CalibrationSet(
            *(np.concatenate([getattr(p, name) for p in parts]) for name in ("product_id", "store", "gpt_id",
                                                                            "labels")),
            [np.concatenate([p.logits[k] for p in parts]) for k in range(len(parts[0].logits))],
            {name: [np.concatenate([p.evidence[name][k] for p in parts]) for k in range(len(scores))]
             for name, scores in parts[0].evidence.items()})


def _scored(arrays: Mapping[str, np.ndarray], depth: int, logits: list[np.ndarray],
            evidence: dict[str, list[np.ndarray]]) -> CalibrationSet:
    return CalibrationSet(np.asarray(arrays["product_id"], dtype=object),
                          np.asarray(arrays["store"], dtype=object), np.asarray(arrays["gpt_id"], np.int64),
                          class_labels(arrays, depth), logits, evidence)


def from_model(predictor, arrays: Mapping[str, np.ndarray], depth: int) -> CalibrationSet:
    """The exported model's own logits and evidence on held-out arrays (`data.read_split`)."""
    inputs = model_inputs(arrays)
    logits = predictor.level_logits(inputs)
    scores = predictor.level_evidence(inputs)
    return _scored(arrays, depth, [logits[level_name(k)] for k in range(1, depth + 1)],
                   {name: [scores[evidence_output(name, k)] for k in range(1, depth + 1)]
                    for name in predictor.evidence})


def _select(arrays: Mapping[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {name: values[rows] for name, values in arrays.items()}


def _score_fold(network, arrays: Mapping[str, np.ndarray], depth: int, prior: evidence.PriorTables | None,
                memory: evidence.ExemplarTables | None) -> CalibrationSet:
    """The fold network's logits and the evidence (with the fold's memory) on the held-out arrays."""
    logits: list[list[np.ndarray]] = [[] for _ in range(depth)]
    by_name: dict[str, list[list[np.ndarray]]] = {}
    n = len(arrays["gpt_id"])
    for start in range(0, n, BATCH):
        batch = {name: tf.constant(np.asarray(arrays[name][start:start + BATCH], np.float32))
                 for name in MODEL_INPUTS}
        outputs = network(batch, training=False)
        for k in range(depth):
            logits[k].append(outputs[level_name(k + 1)].numpy())
        for name, scores in evidence.evidence_scores(batch, prior, memory).items():
            by_name.setdefault(name, [[] for _ in range(depth)])
            for k in range(depth):
                by_name[name][k].append(scores[k].numpy())
    return _scored(arrays, depth, [np.concatenate(z) for z in logits],
                   {name: [np.concatenate(e) for e in scores] for name, scores in by_name.items()})


@dataclass(frozen=True)
class FoldTraining:
    """What every fold network and memory is built with: the model's config, the taxonomy priors (when
    the model has category embeddings) and the training data's store cap."""

    config: ModelConfig
    taxonomy: Taxonomy
    prior: evidence.PriorTables | None
    store_cap: float | None

    @classmethod
    def of(cls, model_dir: str | Path, data_dir: str | Path, taxonomy: Taxonomy) -> FoldTraining:
        from linnet_core.model.train import data_store_cap

        model_dir = Path(model_dir)
        config = ModelConfig.from_json(json.loads((model_dir / CONFIG_JSON).read_text(encoding="utf-8")),
                                       source=str(model_dir / CONFIG_JSON))
        embeddings_path = model_dir / CATEGORY_EMBEDDINGS
        prior = (evidence.PriorTables.build(taxonomy, CategoryEmbeddings.load(embeddings_path))
                 if embeddings_path.exists() else None)
        return cls(config, taxonomy, prior, data_store_cap(data_dir))


# (held-out fold, the other folds' arrays) → a factor per training example that multiplies its weights
ExampleWeights = Callable[[int, Mapping[str, np.ndarray]], np.ndarray]


def cross_fitted(model_dir: str | Path, data_dir: str | Path, taxonomy: Taxonomy, folds: int = DEFAULT_FOLDS,
                 keep: Callable[[dict], np.ndarray] | None = None,
                 splits: Sequence[str] = (TRAIN, CALIBRATION),
                 prepare: Callable[[dict], dict] | None = None,
                 example_weights: ExampleWeights | None = None) -> CalibrationSet:
    """The cross-fitted calibration set of the pool (the `splits` of DATA the model was trained on).

    Args:
        model_dir: the trained model: its config.json (the fold networks' config) and
            category_embeddings.npz (the taxonomy priors), when present.
        folds: groups of stores (> 1).
        keep: rows → the row indexes to score (e.g. a store cap); None scores every pool product.
        splits: the pool.
        prepare: the pool's arrays → the arrays to cross-fit instead, before anything (other labels:
            injected flips; fewer rows: a sample).
        example_weights: see `cross_fit`.

    Raises:
        ValueError: folds < 2, or fewer than two non-empty folds.
    """
    if folds < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, got {folds}")
    pool = read_splits(data_dir, tuple(splits), weights=True)
    pool = prepare(pool) if prepare else pool
    scored_rows = np.asarray(keep(pool) if keep else np.arange(len(pool["gpt_id"])), np.int64)
    return cross_fit(FoldTraining.of(model_dir, data_dir, taxonomy), pool, store_folds(pool["store"], folds),
                     scored_rows, example_weights)


def cross_fit(training: FoldTraining, pool: Mapping[str, np.ndarray], fold: np.ndarray,
              scored_rows: np.ndarray, example_weights: ExampleWeights | None = None) -> CalibrationSet:
    """Score `scored_rows` of `pool` (`data.read_splits` arrays with weights), each by a network and an
    exemplar memory built from the rows of the other folds (`fold`: int[N], a fold per row).

    Args:
        example_weights: per held-out fold, factors for the other folds' examples' weights in the
            network's loss and in the exemplar memory (0 leaves an example out), e.g. a label audit run
            on those folds alone; None: 1.

    Raises:
        ValueError: fewer than two folds hold scored rows.
    """
    from linnet_core.model.train import exemplar_memory, fit_network

    taxonomy, config = training.taxonomy, training.config
    depth, sizes = taxonomy.max_depth, taxonomy.level_sizes()
    held_out = [int(f) for f in np.unique(fold[scored_rows])]
    if len(held_out) < 2:
        stores = len(np.unique(pool["store"]))
        raise ValueError(f"the pool's {stores} stores fill fewer than 2 folds")
    parts = []
    progress = Progress("cross-fitting", total=len(held_out), unit="folds", interval_s=0.0)
    for f in held_out:
        tf_keras.utils.set_random_seed(config.seed + f)  # the same folds give the same networks
        others = _select(pool, np.flatnonzero(fold != f))
        factors = None if example_weights is None else example_weights(f, others)
        if factors is not None:
            others = scaled_weights(others, factors)
        n = len(others["gpt_id"])
        dataset = array_dataset(others, config.batch_size, shuffle_buffer=config.shuffle_buffer,
                                seed=config.seed, repeat=True)
        network, _ = fit_network(config, sizes, dataset, math.ceil(n / config.batch_size),
                                 what=f"fold {f + 1} network")
        memory = evidence.ExemplarTables.build(
            taxonomy, exemplar_memory(others, taxonomy, training.store_cap, config, factors))
        rows = scored_rows[fold[scored_rows] == f]
        parts.append(_score_fold(network, _select(pool, rows), depth, training.prior, memory))
        logger.info("cross-fitting fold %d: trained on %d products, scored %d", f, n, len(rows))
        progress.update()
    return CalibrationSet.concatenate(parts)


def store_contributions(calibration: CalibrationSet, taxonomy: Taxonomy, temperatures: Sequence[float],
                        weights: Mapping[str, Sequence[float]]) -> np.ndarray:
    """Each product's contribution to its store's context at this first-pass fusion, by the model's own
    ops (evidence.store_contributions)."""
    layout = ContextLayout.of(taxonomy.level_sizes())
    parts = []
    for start in range(0, len(calibration.gpt_id), BATCH):
        stop = start + BATCH
        weighted = tuple((
            [tf.constant(scores[k][start:stop]) for k in range(len(layout.sizes))],
            tf.constant(np.asarray(weights.get(name, [0.0] * LEVELS), np.float32)))
            for name, scores in calibration.evidence.items() if name != STORE_CONTEXT)
        probabilities = decoding.level_probabilities(
            [tf.constant(z[start:stop]) for z in calibration.logits[:len(layout.sizes)]],
            tf.constant(np.asarray(temperatures, np.float32)), weighted)
        parts.append(evidence.store_contributions(probabilities, layout).numpy())
    return np.concatenate(parts) if parts else np.zeros((0, layout.width), np.float32)


def with_store_context(calibration: CalibrationSet, taxonomy: Taxonomy, temperatures: Sequence[float],
                       weights: Mapping[str, Sequence[float]]) -> CalibrationSet:
    """The set with the store-context evidence: each product's leave-one-out mean of its store-mates'
    first-pass contributions within the set (what a batch of a store's products gives each of them)."""
    own = store_contributions(calibration, taxonomy, temperatures, weights)
    context = store_contexts(own, calibration.store)
    layout = ContextLayout.of(taxonomy.level_sizes())
    scores = level_scores(context, layout, [z.shape[1] for z in calibration.logits])
    return replace(calibration, evidence={**calibration.evidence, STORE_CONTEXT: scores})


def _batches(calibration: CalibrationSet, temperatures: Sequence[float],
             weights: Mapping[str, Sequence[float]]):
    """The set in batches as the decoding ops take it: (rows, per-level logits, temperatures, evidence)."""
    depth = len(calibration.logits)
    temperatures = tf.constant(np.asarray(temperatures, np.float32))
    for start in range(0, len(calibration.gpt_id), BATCH):
        rows = slice(start, start + BATCH)
        weighted = tuple((
            [tf.constant(scores[k][rows]) for k in range(depth)],
            tf.constant(np.asarray(weights.get(name, [0.0] * LEVELS), np.float32)))
            for name, scores in calibration.evidence.items())
        yield rows, [tf.constant(z[rows]) for z in calibration.logits], temperatures, weighted


def decode_paths(calibration: CalibrationSet, taxonomy: Taxonomy, temperatures: Sequence[float],
                 weights: Mapping[str, Sequence[float]], mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode the set with the model's own decoding ops at these fusion settings: (level_ids int64[N, 7],
    path confidences float64[N, 7]), before any threshold."""
    tables = decoding.DecodingTables.build(taxonomy)
    ids, confidences = [], []
    zeros = tf.zeros([LEVELS])
    for _, logits, scale, weighted in _batches(calibration, temperatures, weights):
        out = decoding.decode(logits, tables, scale, tf.constant(mode), zeros, tf.constant(False), weighted)
        ids.append(out["level_ids"].numpy())
        confidences.append(out["level_confidences"].numpy())
    return (np.concatenate(ids).astype(np.int64).reshape(-1, LEVELS),
            np.concatenate(confidences).astype(np.float64).reshape(-1, LEVELS))


def label_confidences(calibration: CalibrationSet, taxonomy: Taxonomy, temperatures: Sequence[float],
                      weights: Mapping[str, Sequence[float]]) -> np.ndarray:
    """float64[N, depth]: the path probability the fused model gives each node of each product's own
    label (0 past the label), by the ops that score decoded paths: what a label audit weighs."""
    tables = decoding.DecodingTables.build(taxonomy)
    parts = []
    for rows, logits, scale, weighted in _batches(calibration, temperatures, weights):
        log_probs = decoding.sibling_log_probs(logits, tables, scale, weighted)
        labels = tf.constant(calibration.labels[rows], tf.int32)
        parts.append(decoding.path_confidences(log_probs, labels).numpy())
    return np.concatenate(parts).astype(np.float64).reshape(-1, tables.depth)
