"""Calibrate a model directory and give it precision-target thresholds (`linnet tune-thresholds`).

1. the calibration set (`calibration.crossfit`): logits and evidence of labelled products from stores the
   scoring networks never saw, cross-fitted over the train and calibration stores by default, at most
   `max_products_per_store` products per store (the acceptance set's cap, so no store decides the fit);
2. per level, the temperature of the network's logits and the weight of each product evidence by NLL
   (the first pass); each product's store context from its store-mates' first-pass predictions
   (leave-one-out, linnet_core.store_context); then the fusion again with the store context;
3. decode the set with the model's own decoding ops at that fusion (exact decoding depends on it);
4. per level, the smallest Clopper–Pearson-certified threshold for the target, sensitive floors as
   overrides (optionally per level-1 subtree);
5. write a versioned calibration file, re-export the inference model with it, and keep the decoded
   calibration paths (MODEL/calibration_paths.npz) so `linnet evaluate` retunes on the same evidence.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from linnet_core import metrics
from linnet_core.calibration import fusion
from linnet_core.calibration.thresholds import DELTA, FirstPass, Thresholds, save_thresholds, tune
from linnet_core.capped_sample import MAX_PRODUCTS_PER_STORE, capped_rows
from linnet_core.features import LEVELS, NO_LABEL
from linnet_core.taxonomy import Taxonomy
from linnet_core.training_data import CALIBRATION, DEFAULT_FOLDS, TRAIN

logger = logging.getLogger(__name__)
HISTORY = "calibration_history"
REPORT = "thresholds_report.json"
CALIBRATION_PATHS = "calibration_paths.npz"


@dataclass(frozen=True)
class CalibrationPaths:
    """Decoded calibration products (before thresholds) and their labels: what thresholds are tuned on."""

    product_id: np.ndarray
    store: np.ndarray
    gpt_id: np.ndarray
    level_ids: np.ndarray
    level_confidences: np.ndarray

    def save(self, path: str | Path) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, product_id=self.product_id.astype(str), store=self.store.astype(str),
                 gpt_id=self.gpt_id, level_ids=self.level_ids, level_confidences=self.level_confidences)
        Path(path).write_bytes(buffer.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> CalibrationPaths:
        with np.load(io.BytesIO(Path(path).read_bytes())) as npz:
            return cls(npz["product_id"].astype(object), npz["store"].astype(object), npz["gpt_id"],
                       npz["level_ids"], npz["level_confidences"])


def parent_indexes(taxonomy: Taxonomy) -> list[np.ndarray]:
    """Per level, each class's parent class index at the level above (-1 at level 1)."""
    return [np.array([taxonomy.level_index(parent.id) if (parent := taxonomy.parent(i)) else NO_LABEL
                      for i in taxonomy.level_ids(k)], dtype=np.int64)
            for k in range(1, taxonomy.max_depth + 1)]


def _padded(values: tuple[float, ...], fill: float) -> tuple[float, ...]:
    return tuple(values) + (fill,) * (LEVELS - len(values))


def fit_fusion_weights(calibration_set, taxonomy: Taxonomy
                       ) -> tuple[tuple[float, ...], dict[str, tuple[float, ...]]]:
    """Per-level temperatures and evidence weights fitted on a `crossfit.CalibrationSet`."""
    names = list(calibration_set.evidence)
    temperatures, weights = fusion.fit_fusions(
        calibration_set.logits, [calibration_set.evidence[name] for name in names], calibration_set.labels,
        parent_indexes(taxonomy))
    return _padded(temperatures, 1.0), {name: _padded(w, 0.0) for name, w in zip(names, weights, strict=True)}


def fit_fusion(scored, taxonomy: Taxonomy):
    """Step 2 of the tuning on a `crossfit.CalibrationSet`: the first-pass fusion, the store context it
    gives, then the fusion with the store context.

    Returns:
        (the set with its store-context evidence, the FirstPass, temperatures, evidence weights).
    """
    from linnet_core.calibration import crossfit

    first = FirstPass(*fit_fusion_weights(scored, taxonomy))
    scored = crossfit.with_store_context(scored, taxonomy, first.temperatures, first.evidence_weights)
    return (scored, first, *fit_fusion_weights(scored, taxonomy))


def calibration_set(model_dir: Path, data_dir: str | Path, taxonomy: Taxonomy, folds: int,
                    max_products_per_store: int | None, prepare=None):
    """The capped calibration set (`max_products_per_store` None: every product): cross-fitted over the
    model's training splits with `folds` > 1 (`prepare`: the pool's arrays → the arrays to cross-fit,
    e.g. with other labels or fewer products), else the model on
    the calibration split (which it must not have learnt from).

    Raises:
        ValueError: folds < 2 on a model trained on the calibration split.
    """
    from linnet_core.calibration import crossfit
    from linnet_core.model.data import read_split
    from linnet_core.model.export import read_model_json
    from linnet_core.model.predictor import Predictor

    def cap(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        every = np.arange(len(arrays["product_id"]))
        if not max_products_per_store:
            return every
        return capped_rows(arrays["product_id"], arrays["store"], max_products_per_store)

    splits = read_model_json(model_dir)["training"].get("splits", [TRAIN, CALIBRATION])
    if folds > 1:
        return crossfit.cross_fitted(model_dir, data_dir, taxonomy, folds, keep=cap, splits=splits,
                                     prepare=prepare)
    if prepare is not None:
        raise ValueError("changing the pool needs cross-fitting (folds > 1): the model learnt the one it has")
    if CALIBRATION in splits:
        raise ValueError(f"--folds {folds}: the model learnt from the {CALIBRATION} split, so it cannot "
                         f"calibrate on it; cross-fit (--folds > 1) or train with --holdout {CALIBRATION}")
    split = read_split(data_dir, CALIBRATION)
    rows = cap(split)
    return crossfit.from_model(Predictor(model_dir, taxonomy), {k: v[rows] for k, v in split.items()},
                               taxonomy.max_depth)


def calibrate_and_tune(model_dir: str | Path, data_dir: str | Path, target_precision: float,
                       floors: Mapping[int, float] | None = None, per_subtree: bool = False,
                       delta: float = DELTA, folds: int = DEFAULT_FOLDS,
                       max_products_per_store: int = MAX_PRODUCTS_PER_STORE) -> tuple[Thresholds, dict]:
    """Steps 1–5 above on MODEL and DATA.

    Returns:
        (the thresholds now baked into MODEL, the evidence written to MODEL/thresholds_report.json).

    Raises:
        DataError (a split is missing), ModelDirError, ValueError (too few stores to cross-fit),
        ThresholdsError.
    """
    from linnet_core.calibration import crossfit
    from linnet_core.calibration.thresholds import load_thresholds
    from linnet_core.model import calibration_path
    from linnet_core.model.export import (
        TAXONOMY_COPY,
        export_inference_model,
        read_model_json,
    )

    model_dir = Path(model_dir)
    taxonomy = Taxonomy.load(model_dir / TAXONOMY_COPY)
    table = metrics.AncestorTable(taxonomy)
    before = load_thresholds(calibration_path(model_dir))
    mode = read_model_json(model_dir).get("default_decoding", "exact")
    scored, first, temperatures, weights = fit_fusion(calibration_set(model_dir, data_dir, taxonomy, folds,
                                                                      max_products_per_store), taxonomy)
    logger.info("fitted on %d calibration products (%d stores): temperatures %s, evidence weights %s",
                len(scored.gpt_id), len(np.unique(scored.store)), temperatures, weights)

    known = np.where(np.isin(scored.gpt_id, table.ids), scored.gpt_id, NO_LABEL)
    unfused_ids, unfused_confidences = crossfit.decode_paths(scored, taxonomy, (1.0,) * LEVELS, {}, mode)
    level_ids, confidences = crossfit.decode_paths(scored, taxonomy, temperatures, weights, mode)
    tuned, evidence = tune(level_ids, confidences, table.path_of(known), target_precision,
                           temperatures=temperatures, floors=dict(floors or {}), per_subtree=per_subtree,
                           delta=delta, evidence_weights=weights, first_pass=first, stores=scored.store)
    history = model_dir / HISTORY
    history.mkdir(exist_ok=True)
    path = history / f"{tuned.version}.json"
    save_thresholds(tuned, path)
    export_inference_model(model_dir, path)
    CalibrationPaths(scored.product_id, scored.store, known, level_ids, confidences).save(
        model_dir / CALIBRATION_PATHS)
    evidence.update({
        "thresholds_version": tuned.version, "previous_thresholds_version": before.version,
        "temperatures": list(temperatures), "evidence_weights": {k: list(v) for k, v in weights.items()},
        "first_pass": {"temperatures": list(first.temperatures),
                       "evidence_weights": {k: list(v) for k, v in first.evidence_weights.items()}},
        "calibration": {"folds": folds if folds > 1 else None,
                        "max_products_per_store": max_products_per_store, "products": int(len(known)),
                        "stores": int(len(np.unique(scored.store)))},
        "ece_unfused": metrics.level_ece(unfused_ids, unfused_confidences, known, table),
        "ece_after": metrics.level_ece(level_ids, confidences, known, table),
        "floors": {str(k): v for k, v in sorted((floors or {}).items())},
    })
    return tuned, evidence
