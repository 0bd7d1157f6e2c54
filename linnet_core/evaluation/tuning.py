"""Calibrate a model directory and give it precision-target thresholds (`linnet tune-thresholds`).

1. fit one temperature per level on the calibration split's raw logits (NLL), jointly with the weight
   of the taxonomy prior when the model has category embeddings (fused logits L/T + λ·P);
2. re-export with those temperatures, so the model's own decoding yields calibrated path confidences
   (exact decoding depends on the temperatures, so paths are decoded again, never re-derived here);
3. per level, the smallest Clopper–Pearson-certified threshold for the target, sensitive floors as
   overrides (optionally per level-1 subtree);
4. write a versioned thresholds file and re-export the inference model with it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from linnet_core import calibration, metrics
from linnet_core.evaluation.baselines import model_inputs, read_split
from linnet_core.features import LEVELS, NO_LABEL
from linnet_core.taxonomy import Taxonomy
from linnet_core.thresholds import DELTA, Thresholds, content_version, save_thresholds, tune

logger = logging.getLogger(__name__)
HISTORY = "thresholds_history"
REPORT = "thresholds_report.json"


def class_labels(gpt_ids: np.ndarray, taxonomy: Taxonomy) -> np.ndarray:
    """int[N, LEVELS]: the label's class index per level (-1 past its depth, or when unknown)."""
    rows = []
    for gpt_id in gpt_ids:
        labels = taxonomy.level_labels(int(gpt_id)) if int(gpt_id) in taxonomy else []
        rows.append((list(labels) + [NO_LABEL] * LEVELS)[:LEVELS])
    return np.array(rows, dtype=np.int64).reshape(-1, LEVELS)


def parent_indexes(taxonomy: Taxonomy) -> list[np.ndarray]:
    """Per level, each class's parent class index at the level above (-1 at level 1)."""
    return [np.array([taxonomy.level_index(parent.id) if (parent := taxonomy.parent(i)) else NO_LABEL
                      for i in taxonomy.level_ids(k)], dtype=np.int64)
            for k in range(1, taxonomy.max_depth + 1)]


def fit_temperatures(predictor, split: Mapping[str, np.ndarray], taxonomy: Taxonomy) -> tuple[float, ...]:
    """Per-level temperatures, each level k > 1 fit among the label's siblings (1.0 for levels with
    fewer than calibration.MIN_EXAMPLES labels or beyond the taxonomy's depth)."""
    logits = predictor.level_logits(*model_inputs(split))
    labels = class_labels(split["gpt_id"], taxonomy)
    depth = taxonomy.max_depth
    fitted = calibration.fit_temperatures([logits[f"level_{k}"] for k in range(1, depth + 1)],
                                          labels[:, :depth], parent_indexes(taxonomy))
    return tuple(fitted) + (1.0,) * (LEVELS - depth)


def fit_temperatures_and_priors(predictor, split: Mapping[str, np.ndarray],
                                taxonomy: Taxonomy) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-level (temperatures, prior weights) of the fused logits, fit as `fit_temperatures` fits
    temperatures; a model without category embeddings gets temperatures alone and weights 0."""
    if not predictor.metadata.get("category_encoder_id"):
        return fit_temperatures(predictor, split, taxonomy), (0.0,) * LEVELS
    inputs = model_inputs(split)
    logits, priors = predictor.level_logits(*inputs), predictor.level_priors(*inputs)
    labels = class_labels(split["gpt_id"], taxonomy)
    depth = taxonomy.max_depth
    names = [f"level_{k}" for k in range(1, depth + 1)]
    temperatures, weights = calibration.fit_temperatures_and_priors(
        [logits[n] for n in names], [priors[n] for n in names], labels[:, :depth], parent_indexes(taxonomy))
    return tuple(temperatures) + (1.0,) * (LEVELS - depth), tuple(weights) + (0.0,) * (LEVELS - depth)


def _calibration_summary(outputs: Mapping[str, np.ndarray], split: Mapping[str, np.ndarray],
                         table: metrics.AncestorTable) -> list[float]:
    known = np.where(np.isin(split["gpt_id"], table.ids), split["gpt_id"], NO_LABEL)
    return metrics.level_ece(outputs["level_ids"], outputs["level_confidences"], known, table)


def calibrate_and_tune(model_dir: str | Path, data_dir: str | Path, target_precision: float,
                       floors: Mapping[int, float] | None = None, per_subtree: bool = False,
                       delta: float = DELTA) -> tuple[Thresholds, dict]:
    """Steps 1–4 above on MODEL and DATA/calibration.

    Returns:
        (the thresholds now baked into MODEL, the evidence written to MODEL/thresholds_report.json).

    Raises:
        DataError (no calibration split), ModelDirError, TaxonomyMismatchError, ThresholdsError.
    """
    from linnet_core.model.export import TAXONOMY_COPY, export_inference_model
    from linnet_core.model.predictor import Predictor

    model_dir = Path(model_dir)
    taxonomy = Taxonomy.load(model_dir / TAXONOMY_COPY)
    table = metrics.AncestorTable(taxonomy)
    split = read_split(data_dir, "calibration")
    predictor = Predictor(model_dir, taxonomy)
    before = predictor.thresholds
    ece_before = _calibration_summary(predictor.predict(*model_inputs(split)), split, table)
    temperatures, prior_weights = fit_temperatures_and_priors(predictor, split, taxonomy)
    logger.info("temperatures %s and prior weights %s fitted on %d calibration products", temperatures,
                prior_weights, len(split["gpt_id"]))

    history = model_dir / HISTORY
    history.mkdir(exist_ok=True)
    staged_version = content_version(before.levels, temperatures, before.overrides, None, prior_weights)
    staged = Thresholds(staged_version, before.levels, temperatures, dict(before.overrides),
                        prior_weights=prior_weights)
    save_thresholds(staged, history / f"{staged.version}.json")
    export_inference_model(model_dir, history / f"{staged.version}.json")

    predictor = Predictor(model_dir, taxonomy)
    outputs = predictor.predict(*model_inputs(split))
    known = np.where(np.isin(split["gpt_id"], table.ids), split["gpt_id"], NO_LABEL)
    tuned, evidence = tune(outputs["level_ids"], outputs["level_confidences"], table.path_of(known),
                           target_precision, temperatures=temperatures, floors=dict(floors or {}),
                           per_subtree=per_subtree, delta=delta, prior_weights=prior_weights)
    path = history / f"{tuned.version}.json"
    save_thresholds(tuned, path)
    export_inference_model(model_dir, path)
    evidence.update({
        "thresholds_version": tuned.version, "previous_thresholds_version": before.version,
        "temperatures": list(temperatures), "prior_weights": list(prior_weights),
        "n_calibration": int(len(known)),
        "ece_before": ece_before, "ece_after": _calibration_summary(outputs, split, table),
        "floors": {str(k): v for k, v in sorted((floors or {}).items())},
    })
    return tuned, evidence
