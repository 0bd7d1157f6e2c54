"""The evaluate command's logic: gather each system's outputs on the same products, measure, report.

Ours is either a categorized table (`predictions`) or the model run on a training-data split.
Baselines need the model and the training data: (a) trains on the `train` split's products, (b)
decodes the evaluated split; both are then aligned with ours by product id. Everything is
deterministic (fixed seeds, no sampling), so the report is the same run to run.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from linnet_core import metrics
from linnet_core.calibration.thresholds import Thresholds, cut_paths, tune
from linnet_core.capped_sample import MAX_PRODUCTS_PER_STORE, capped_rows
from linnet_core.evaluation import baselines, report
from linnet_core.evaluation.systems import (
    EvaluationError,
    Labels,
    SystemOutput,
    align,
    join,
    read_labels,
    read_predictions,
)
from linnet_core.features import LEVELS, NO_LABEL
from linnet_core.taxonomy import Taxonomy
from linnet_core.training_data import DEFAULT_FOLDS, store_folds

logger = logging.getLogger(__name__)
BASELINES = (baselines.TFIDF, baselines.PUBLISHED)
TARGET_GRID = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.88, 0.9, 0.92, 0.94, 0.96, 0.98)


@dataclass(frozen=True)
class EvaluationConfig:
    """What to evaluate and where to write it.

    Attributes:
        taxonomy_file: the GPT file the labels and model use.
        output: directory for metrics.json, report.md and the plots.
        predictions: categorized-table Parquet (glob or directory); None runs `model` on `split`.
        labels: products-table Parquet with labels; None takes labels from the training data split.
        model, training_data: model directory and training-data directory (TFRecords).
        split: the training-data split evaluated when there are no predictions (and decoded for (b)).
        baselines: which of BASELINES to add; None adds those whose inputs are given.
        products: raw products (JSONL) or products Parquet with the texts for (a), which needs them.
        hp_floor: the hierarchical precision at which coverages are compared.
        max_products_per_store: products per store in the `capped_per_store` block (the acceptance
            set's cap).
    """

    taxonomy_file: str
    output: str
    predictions: str | None = None
    labels: str | None = None
    model: str | None = None
    training_data: str | None = None
    split: str = "validation"
    baselines: tuple[str, ...] | None = None
    products: str | None = None
    hp_floor: float = report.HP_FLOOR
    target_grid: tuple[float, ...] = field(default=TARGET_GRID)
    max_products_per_store: int = MAX_PRODUCTS_PER_STORE

    def __post_init__(self) -> None:
        if self.max_products_per_store <= 0:
            raise EvaluationError("--max-products-per-store must be a positive number of products, got "
                                  f"{self.max_products_per_store}")
        if self.predictions is None and not (self.model and self.training_data):
            raise EvaluationError("give --predictions, or --model and --training-data to run the model")
        if self.predictions is not None and self.labels is None:
            raise EvaluationError("--predictions needs --labels (the products table with gpt_id)")
        unknown = set(self.baselines or ()) - set(BASELINES)
        if unknown:
            raise EvaluationError(f"unknown baselines {sorted(unknown)}; choose from {BASELINES}")
        needs_model = set(self.baselines or ()) and not (self.model and self.training_data)
        if needs_model:
            raise EvaluationError(f"baselines {sorted(self.baselines)} need --model and --training-data")


def _labels_from_split(arrays: dict[str, np.ndarray]) -> Labels:
    return Labels(arrays["product_id"], arrays["gpt_id"], arrays["lang"], arrays["store"])


def _known_labels(labels: Labels, table: metrics.AncestorTable) -> tuple[Labels, int]:
    """Labels whose id the taxonomy lacks become unlabelled (counted, never silently dropped)."""
    known = np.isin(labels.gpt_id, table.ids) | (labels.gpt_id == NO_LABEL)
    fixed = Labels(labels.product_ids, np.where(known, labels.gpt_id, NO_LABEL), labels.lang, labels.store)
    return fixed, int((~known).sum())


def _published_default(system_on_calibration: SystemOutput, calibration: Labels,
                       table: metrics.AncestorTable, settings: list[tuple[str, Thresholds]]) -> Thresholds:
    """The published design's thresholds were hand-set per level; as its fairest stand-in, take the
    uniform threshold with the best hF1 on the calibration split."""
    points = report.operating_curve(system_on_calibration, calibration, table, settings, back_off=False)
    best = max(range(len(points)), key=lambda i: (np.nan_to_num(points[i].hF1), -i))
    return settings[best][1]


def run(config: EvaluationConfig) -> dict:
    """Evaluate; write metrics.json, report.md and the plots into `config.output`; return the result."""
    from linnet_core.evaluation import plots
    from linnet_core.model.data import read_split

    taxonomy = Taxonomy.load(config.taxonomy_file)
    table = metrics.AncestorTable(taxonomy)
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    wanted = config.baselines if config.baselines is not None else (
        BASELINES if config.model and config.training_data else ())
    predictor = split = calibration = unseen_stores = None
    if config.model and config.training_data:
        from linnet_core.model.predictor import Predictor

        predictor = Predictor(config.model, taxonomy)
        learnt = predictor.info.get("training", {}).get("splits", [])
        if config.split in learnt:
            raise EvaluationError(f"model {config.model} learnt from the {config.split} split "
                                  f"({', '.join(learnt)}): evaluate a model trained with "
                                  f"`linnet train --holdout {config.split}`")
        split = read_split(config.training_data, config.split)
    ours = (read_predictions(config.predictions) if config.predictions
            else baselines.model_system(predictor, split))
    labels_source = read_labels(config.labels) if config.labels else _labels_from_split(split)
    labels = join(ours, labels_source)
    labels, invalid = _known_labels(labels, table)
    versions = {"model_version": "unknown", "taxonomy_version": taxonomy.version,
                "thresholds_version": "unknown", **ours.versions}
    if versions["taxonomy_version"] != taxonomy.version:
        raise EvaluationError(f"predictions were made with taxonomy {versions['taxonomy_version']}, "
                              f"evaluating with {taxonomy.version}")

    systems: list[SystemOutput] = []
    curves: dict[str, list[report.OperatingPoint]] = {}
    compared = ours
    if wanted:
        common = np.isin(ours.product_ids, split["product_id"])
        if not common.all():
            logger.warning("%d evaluated products are not in the %s split; baselines compare on the other %d",
                           int((~common).sum()), config.split, int(common.sum()))
        compared, compared_labels = ours.take(np.flatnonzero(common)), labels.take(np.flatnonzero(common))
        calibration = read_split(config.training_data, "calibration")
        calibration_labels, _ = _known_labels(_labels_from_split(calibration), table)
        if baselines.TFIDF in wanted:
            systems.append(_tfidf(config, table, compared))
            curves[baselines.TFIDF] = report.operating_curve(systems[-1], compared_labels, table,
                                                             report.uniform_settings(), back_off=False)
        if baselines.PUBLISHED in wanted:
            sweep = report.uniform_settings(overrides=predictor.thresholds.overrides)
            for name, fused in ((baselines.PUBLISHED, False), (baselines.PUBLISHED_ON_OURS, True)):
                on_calibration = baselines.published_design(predictor, calibration, [0.0] * LEVELS, fused,
                                                            name)
                chosen = _published_default(on_calibration, calibration_labels, table, sweep)
                system = align(baselines.published_design(predictor, split, list(chosen.levels), fused, name),
                               compared.product_ids)
                systems.append(system)
                curves[name] = report.operating_curve(system, compared_labels, table, sweep, back_off=False)
        tuned_on, tuned_labels = _calibration_paths(config.model, predictor, calibration, table)
        curves[baselines.OURS] = report.operating_curve(
            compared, compared_labels, table,
            _target_settings(tuned_on, tuned_labels, table, predictor.thresholds, config.target_grid),
            back_off=True)
        stores = len(np.unique(tuned_labels.store.astype(str)))
        points = targets_on_unseen_stores(tuned_on, tuned_labels, table, predictor.thresholds,
                                          config.target_grid)
        unseen_stores = {"n": int(len(tuned_labels.gpt_id)), "stores": stores, "folds": DEFAULT_FOLDS,
                         "points": points}
        uniform = report.uniform_settings(overrides=predictor.thresholds.overrides)
        curves[baselines.OURS_UNIFORM] = report.operating_curve(compared, compared_labels, table, uniform,
                                                                back_off=True)
    else:
        compared_labels = labels
        curves[baselines.OURS] = report.operating_curve(ours, labels, table, report.uniform_settings(),
                                                        back_off=True)
    systems.append(compared)

    result = report.system_metrics(ours, labels, table)
    result.update(versions)
    result["n_invalid_labels"] = invalid
    if config.training_data:
        seen = read_split(config.training_data, "train", embeddings=False)["gpt_id"]
        labelled = labels.gpt_id[labels.gpt_id != NO_LABEL]
        # Labels no training product carries: no leaf classifier can get these exactly right.
        result["unseen_label_share"] = float(np.mean(~np.isin(labelled, seen))) if len(labelled) else math.nan
    baked = predictor.thresholds if predictor else None
    if baked is not None:
        result["cut_rule_mismatches"] = int((cut_paths(ours.level_ids, ours.level_confidences, baked)
                                             != ours.gpt_id).sum())
    result["systems"] = {s.name: report.system_metrics(s, compared_labels, table) for s in systems}
    result["n_compared"] = int(len(compared.product_ids))
    result["capped_per_store"] = capped_per_store(ours, labels, systems, compared_labels, table,
                                                  config.max_products_per_store)
    defaults = {name: report.OperatingPoint("default", *(m[k] for k in ("coverage", "hP", "hR", "hF1")))
                for name, m in result["systems"].items()}
    result["operating_curves"] = {name: report.points_as_dicts(points) for name, points in curves.items()}
    result["comparison"] = _comparison(result, curves, defaults, config.hp_floor)
    if unseen_stores is not None:
        result["targets_on_unseen_stores"] = unseen_stores
    branch_groups = report.branch_names(compared_labels, table)
    result["by_branch"] = report.breakdown(systems, compared_labels, table, branch_groups)
    result["by_language"] = report.breakdown(systems, compared_labels, table, compared_labels.lang)

    titles = baselines.TITLES
    names, matrix = report.level1_confusion(compared, compared_labels, table)
    plot_files = [
        plots.risk_coverage_plot(systems, compared_labels, titles, output / "risk_coverage.png"),
        plots.level_precision_plot(compared, compared_labels, table,
                                   output / "precision_coverage_levels.png"),
        plots.operating_curves_plot(curves, defaults, titles, output / "operating_curves.png"),
        plots.confusion_plot(names, matrix, output / "confusion_level1.png"),
    ]
    report.write_metrics_json(output / "metrics.json", result)
    markdown = report.render_report(report.to_json_safe(result), titles, baselines.DESCRIPTIONS, plot_files)
    (output / "report.md").write_text(markdown, encoding="utf-8")
    return result


CAPPED_KEYS = ("hP", "hR", "hF1", "exact_accuracy", "coverage", "leaf_coverage", "leaf_precision",
               "level_accuracy", "n", "n_labelled")


def capped_per_store(ours: SystemOutput, labels: Labels, systems: list[SystemOutput], compared_labels: Labels,
                     table: metrics.AncestorTable, cap: int) -> dict:
    """The headline metrics on at most `cap` products per store (`capped_sample.capped_rows`: by product-id
    hash, so the same products every run), as the acceptance set is capped: ours on every evaluated
    product, and each system on the compared ones. Products without a store count as one store."""
    def headline(system: SystemOutput, of: Labels) -> dict:
        rows = capped_rows(of.product_ids, of.store, cap)
        measured = report.system_metrics(system.take(rows), of.take(rows), table)
        return {key: measured[key] for key in CAPPED_KEYS}

    return {"max_products_per_store": cap, "n_stores": int(len(np.unique(labels.store.astype(str)))),
            **headline(ours, labels),
            "systems": {system.name: headline(system, compared_labels) for system in systems}}


def _tfidf(config: EvaluationConfig, table: metrics.AncestorTable, compared: SystemOutput) -> SystemOutput:
    """(a) trained on the products of the splits the model learnt from, scored on the compared products."""
    from linnet_core.model.data import read_split
    from linnet_core.model.export import read_model_json

    if config.products is None:
        raise EvaluationError("the TF-IDF baseline needs the products' texts (--products)")
    learnt = read_model_json(config.model).get("training", {}).get("splits", ["train"])
    parts = [read_split(config.training_data, split, embeddings=False) for split in learnt]
    train_ids = {name: np.concatenate([part[name] for part in parts])
                 for name in ("product_id", "gpt_id", "store")}
    texts = baselines.product_texts(config.products, set(train_ids["product_id"]) | set(compared.product_ids))
    missing = [pid for pid in compared.product_ids if pid not in texts]
    if missing:
        raise EvaluationError(f"{len(missing)} evaluated products have no text in {config.products}, "
                              f"e.g. {missing[0]!r}")
    train = [(texts[pid], gid, store) for pid, gid, store in zip(
        train_ids["product_id"], train_ids["gpt_id"], train_ids["store"], strict=True) if pid in texts]
    train_labels = np.array([gid for _, gid, _ in train], dtype=np.int64)
    train_labels = np.where(np.isin(train_labels, table.ids), train_labels, NO_LABEL)
    model = baselines.TfidfBaseline(table).fit([text for text, _, _ in train], train_labels,
                                               [store for _, _, store in train])
    return model.predict(compared.product_ids, [texts[pid] for pid in compared.product_ids])


def _calibration_paths(model_dir: str, predictor, calibration: dict, table: metrics.AncestorTable
                       ) -> tuple[SystemOutput, Labels]:
    """What ours' thresholds are tuned on: the decoded calibration set `linnet tune-thresholds` kept
    (MODEL/calibration_paths.npz, cross-fitted), else the model on the calibration split."""
    from linnet_core.calibration.tuning import CALIBRATION_PATHS, CalibrationPaths

    path = Path(model_dir, CALIBRATION_PATHS)
    if not path.exists():
        labels, _ = _known_labels(_labels_from_split(calibration), table)
        return baselines.model_system(predictor, calibration), labels
    kept = CalibrationPaths.load(path)
    unknown = np.full(len(kept.gpt_id), "unknown", dtype=object)
    system = SystemOutput(baselines.OURS, kept.product_id, np.full(len(kept.gpt_id), NO_LABEL),
                          kept.level_ids, kept.level_confidences)
    return system, Labels(kept.product_id, kept.gpt_id, unknown, kept.store)


def _target_settings(calibration_system: SystemOutput, calibration: Labels, table: metrics.AncestorTable,
                     baked: Thresholds, grid: tuple[float, ...]) -> list[tuple[str, Thresholds]]:
    """Ours at each precision target of `grid`: thresholds tuned on the calibration split (with the
    model's own sensitive floors), as `linnet tune-thresholds` would choose them."""
    true = table.path_of(calibration.gpt_id)
    settings = []
    for target in grid:
        tuned, _ = tune(calibration_system.level_ids, calibration_system.level_confidences, true, target,
                        temperatures=baked.temperatures, floors=baked.overrides, stores=calibration.store)
        settings.append((f"p*={target:.2f}", tuned))
    return settings


def targets_on_unseen_stores(tuned_on: SystemOutput, labels: Labels, table: metrics.AncestorTable,
                             baked: Thresholds, grid: tuple[float, ...],
                             folds: int = DEFAULT_FOLDS) -> list[dict]:
    """Does a precision target hold on stores its thresholds never saw? Per target, thresholds tuned as
    `linnet tune-thresholds` tunes them on the calibration set's other store folds cut each held-out
    fold's paths; hP, hR, hF1 and coverage are then measured over every fold. On the cross-fitted set,
    the networks and memories behind the paths never saw those stores either."""
    fold = store_folds(labels.store, folds)
    true = table.path_of(labels.gpt_id)
    points = []
    for target in grid:
        predicted = np.full(len(fold), NO_LABEL, np.int64)
        for f in np.unique(fold):
            held = fold == f
            tuned, _ = tune(tuned_on.level_ids[~held], tuned_on.level_confidences[~held], true[~held], target,
                            temperatures=baked.temperatures, floors=baked.overrides,
                            stores=labels.store[~held])
            predicted[held] = cut_paths(tuned_on.level_ids[held], tuned_on.level_confidences[held], tuned)
        joined = metrics.Joined.build(predicted, labels.gpt_id, table)
        h_precision, h_recall, h_f1 = metrics.hierarchical_prf(joined)
        points.append({"target": target, "hP": h_precision, "hR": h_recall, "hF1": h_f1,
                       "coverage": metrics.coverage(joined),
                       "exact_accuracy": metrics.exact_accuracy(joined)})
    return points


def _comparison(result: dict, curves: dict[str, list[report.OperatingPoint]],
                defaults: dict[str, report.OperatingPoint], hp_floor: float) -> dict:
    best = {}
    for name, points in curves.items():
        candidates = list(points) + ([defaults[name]] if name in defaults else [])
        point = report.coverage_at_precision(candidates, hp_floor)
        best[name] = None if point is None else asdict(point)
    ours_f1 = result["systems"][baselines.OURS]["hF1"]
    others = [s for s in result["systems"] if s not in (baselines.OURS, baselines.PUBLISHED_ON_OURS)]
    ours_points = [best[n] for n in (baselines.OURS, baselines.OURS_UNIFORM) if best.get(n)]
    ours_best = max(ours_points, key=lambda p: p["coverage"]) if ours_points else None

    def ratio(baseline: str) -> float:
        """Ours' coverage at the floor over the baseline's; NaN when either never reaches the floor."""
        other = best.get(baseline)
        return ours_best["coverage"] / other["coverage"] if ours_best and other else float("nan")

    published_best = best.get(baselines.PUBLISHED)
    return {
        "hp_floor": hp_floor,
        "best_at_floor": best,
        "published_reaches_floor": published_best is not None,
        "ours_beats_baselines_on_hF1": all(ours_f1 > np.nan_to_num(result["systems"][s]["hF1"])
                                           for s in others) if others else None,
        "coverage_ratio_vs_published": ratio(baselines.PUBLISHED),
        # The target: at the floor, at least twice (b)'s coverage; met outright when (b) never gets there.
        "ours_doubles_published_coverage": None if baselines.PUBLISHED not in curves else bool(
            ours_best and (published_best is None
                           or ours_best["coverage"] >= 2 * published_best["coverage"])),
        "coverage_ratio_vs_published_on_ours": ratio(baselines.PUBLISHED_ON_OURS),
    }

