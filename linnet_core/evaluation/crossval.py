"""Store-grouped cross-validation: ours and the baselines trained on exactly the same folds of stores.

Every labelled product of the training data (all splits, every store) falls in one of `folds` groups of
whole stores (`training_data.store_folds`, the folds of cross-fitted calibration). For each fold:
- ours: the cross-fitted scores of `calibration.crossfit` (a network with the model's config and an exemplar
  memory built from the other folds score the fold); the first-pass fusion, the store context, the
  final fusion and the precision-target thresholds are fit on the other folds' products, exactly as
  `linnet tune-thresholds` fits them, and applied to the fold. Its default decision is the thresholds of
  `target_precision`;
- the baselines of `baseline_models` (A TF-IDF + LinearSVC, B flat LR and C one LR per level, greedy,
  on the same two text embeddings the model reads, side by side), trained on the other folds'
  products; they always answer.
Headline figures are on at most `max_products_per_store` products per store (the acceptance set's cap),
the store context of a product coming from its store's other evaluated products. Per system and fold: hF1
of the full decoded path, hF1 / hP / coverage at the default decision, level-1 accuracy, and the largest
coverage with hP ≥ 0.80 over one threshold for every level with back-off (ours also with its tuned
thresholds for 0.80). Reported as mean and standard deviation over folds, with each system's
risk–coverage curve (the uniform-threshold sweep on all evaluated products).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from linnet_core import metrics
from linnet_core.calibration.thresholds import FirstPass, cut_paths, tune
from linnet_core.calibration.tuning import fit_fusion_weights
from linnet_core.capped_sample import MAX_PRODUCTS_PER_STORE, capped_rows
from linnet_core.evaluation import baseline_models, report
from linnet_core.evaluation.systems import Labels, SystemOutput
from linnet_core.features import NO_LABEL, TEXT_EMBEDDING, TITLE_EMBEDDING
from linnet_core.taxonomy import Taxonomy
from linnet_core.training_data import DEFAULT_FOLDS, SPLITS, store_folds

logger = logging.getLogger(__name__)
OURS, FIRST_PASS = "ours", "ours_without_store_context"
TFIDF, FLAT_LR, LEVEL_LR = "A_tfidf_svm", "B_flat_lr", "C_per_level_lr"
BASELINES = (TFIDF, FLAT_LR, LEVEL_LR)
TITLES = {OURS: "ours (defaults)", FIRST_PASS: "ours without store context",
          TFIDF: "(A) TF-IDF word+char, LinearSVC", FLAT_LR: "(B) flat LR on the text and title embeddings",
          LEVEL_LR: "(C) LR per level on the text and title embeddings, greedy"}
TARGETS = (0.7, 0.8)
CROSSVAL_JSON, CROSSVAL_MD = "crossval.json", "crossval.md"
Paths = tuple[np.ndarray, np.ndarray]  # decoded level_ids int64[N, 7], level_confidences float64[N, 7]


def _take(calibration, rows: np.ndarray):
    return replace(calibration, product_id=calibration.product_id[rows], store=calibration.store[rows],
                   gpt_id=calibration.gpt_id[rows], labels=calibration.labels[rows],
                   logits=[z[rows] for z in calibration.logits],
                   evidence={name: [e[rows] for e in scores]
                             for name, scores in calibration.evidence.items()})


def ours_on_fold(scored, train: np.ndarray, test: np.ndarray, taxonomy: Taxonomy, true_paths: np.ndarray,
                 targets: Sequence[float] = TARGETS, store_context: bool = True,
                 evidence: Sequence[str] | None = None) -> dict[str, Paths | np.ndarray]:
    """Ours on the `test` rows of a cross-fitted set, everything fit on the `train` rows.

    Args:
        evidence: the product evidence fused (None: all the set has), for ablations.
        store_context: add the store context after the first pass.

    Returns:
        "paths": the decoded test paths before thresholds; per target t, "t": the test predictions
        after the thresholds tuned for t on the train rows.
    """
    from linnet_core.calibration import crossfit

    if evidence is not None:
        scored = replace(scored, evidence={k: v for k, v in scored.evidence.items() if k in evidence})
    fit, held = _take(scored, train), _take(scored, test)
    first = FirstPass(*fit_fusion_weights(fit, taxonomy))
    temperatures, weights = first.temperatures, first.evidence_weights
    if store_context:
        fit = crossfit.with_store_context(fit, taxonomy, temperatures, weights)
        held = crossfit.with_store_context(held, taxonomy, temperatures, weights)
        temperatures, weights = fit_fusion_weights(fit, taxonomy)
    fit_paths = crossfit.decode_paths(fit, taxonomy, temperatures, weights, "exact")
    paths = crossfit.decode_paths(held, taxonomy, temperatures, weights, "exact")
    result: dict = {"paths": paths, "weights": {k: list(v[:3]) for k, v in weights.items()},
                    "temperatures": list(temperatures[:3])}
    for target in targets:
        thresholds, _ = tune(*fit_paths, true_paths[train], target, temperatures=temperatures,
                             evidence_weights=weights, first_pass=first if store_context else None,
                             stores=fit.store)
        result[target] = cut_paths(*paths, thresholds)
    return result


def _fold_metrics(name: str, paths: Paths, decision: np.ndarray, labels: Labels, table: metrics.AncestorTable,
                  at_08: np.ndarray | None = None) -> dict:
    end, _ = metrics.path_end(*paths)
    full = metrics.compute_metrics(end, labels.gpt_id, table)
    default = metrics.compute_metrics(decision, labels.gpt_id, table)
    system = SystemOutput(name, labels.product_ids, decision, *paths, {})
    sweep = report.operating_curve(system, labels, table, report.uniform_settings(101), back_off=True)
    best = report.coverage_at_precision(sweep)
    coverage_08 = best.coverage if best else 0.0
    if at_08 is not None:
        tuned = metrics.compute_metrics(at_08, labels.gpt_id, table)
        coverage_08 = max(coverage_08, tuned["coverage"] if tuned["hP"] >= report.HP_FLOOR else 0.0)
    return {"hF1_full_path": full["hF1"], "level1_accuracy": full["level_accuracy"][0],
            "hF1": default["hF1"], "hP": default["hP"], "coverage": default["coverage"],
            "coverage_at_hP_0.80": coverage_08, "n": int(len(decision))}


def _summary(per_fold: Sequence[dict]) -> dict:
    keys = [k for k in per_fold[0] if k != "n"]
    return {k: {"mean": float(np.nanmean([f[k] for f in per_fold])),
                "sd": float(np.nanstd([f[k] for f in per_fold]))} for k in keys} | {
        "n": int(sum(f["n"] for f in per_fold))}


def run(data_dir: str | Path, texts: Mapping[str, str], taxonomy: Taxonomy, output: str | Path,
        model_config: str | Path, folds: int = DEFAULT_FOLDS,
        max_products_per_store: int = MAX_PRODUCTS_PER_STORE,
        target_precision: float = TARGETS[0], baselines: Sequence[str] = BASELINES,
        scored=None, progress: Callable[[str], None] = logger.info,
        flagged_weight: float | None = None, capped_training: bool = False) -> dict:
    """The cross-validation: per fold and system the metrics, their mean and spread, the curves.

    Args:
        data_dir: training data (`linnet build-training-data`), every split of which is used.
        texts: product_id → `features.product_text`, for baseline A.
        model_config: a directory with the model's config.json and category_embeddings.npz (a model
            directory, or its copy): ours' fold networks and priors.
        scored: a cross-fitted set already made (else made here: `folds` networks).
        flagged_weight: train ours on audited labels: in each fold the other folds' labels are audited
            among themselves (`auditing.audited_weights`: `folds` - 1 more networks per fold) and the
            flagged ones weigh this much; None: no audit.
        capped_training: the fold networks (and audits) learn from the capped products only, not every
            product of the other folds: fewer examples, for a CPU-bound run; say so with its figures.

    Writes crossval.json and crossval.md (and the curves' PNG) into `output`; returns crossval.json.
    """
    from linnet_core.calibration import crossfit
    from linnet_core.evaluation import auditing
    from linnet_core.model.data import read_splits

    started = time.monotonic()
    table = metrics.AncestorTable(taxonomy)
    pool = read_splits(data_dir, SPLITS)
    fold = store_folds(pool["store"], folds)
    capped = np.zeros(len(fold), bool)
    capped[capped_rows(pool["product_id"], pool["store"], max_products_per_store)] = True

    def keep(arrays: dict) -> np.ndarray:
        return capped_rows(arrays["product_id"], arrays["store"], max_products_per_store)

    def capped_only(arrays: dict) -> dict:
        rows = keep(arrays)
        return {name: values[rows] for name, values in arrays.items()}

    if scored is None:
        progress(f"cross-fitting {folds} fold networks over {len(np.unique(pool['store']))} stores")
        weights = (None if flagged_weight is None else
                   auditing.audited_weights(model_config, data_dir, taxonomy, folds, flagged_weight))
        scored = crossfit.cross_fitted(model_config, data_dir, taxonomy, folds,
                                       keep=keep,
                                       splits=SPLITS, prepare=capped_only if capped_training else None,
                                       example_weights=weights)
    known_pool = np.where(np.isin(pool["gpt_id"], table.ids), pool["gpt_id"], NO_LABEL)
    index = {pid: i for i, pid in enumerate(pool["product_id"])}
    scored_rows = np.array([index[pid] for pid in scored.product_id], np.int64)
    scored = _take(scored, np.flatnonzero(capped[scored_rows]))  # the capped products only
    scored_rows = scored_rows[capped[scored_rows]]
    scored_fold = fold[scored_rows]
    true_paths = table.path_of(known_pool[scored_rows])
    per_system: dict[str, list[dict]] = {}
    pooled: dict[str, list] = {}
    for f in range(folds):
        train, test = np.flatnonzero(scored_fold != f), np.flatnonzero(scored_fold == f)
        if not len(test):
            continue
        rows = scored_rows[test]
        labels = Labels(pool["product_id"][rows], known_pool[rows], pool["lang"][rows], pool["store"][rows])
        outcomes = {}
        ours = ours_on_fold(scored, train, test, taxonomy, true_paths, TARGETS)
        outcomes[OURS] = (ours["paths"], ours[target_precision], ours[0.8])
        first = ours_on_fold(scored, train, test, taxonomy, true_paths, TARGETS, store_context=False)
        outcomes[FIRST_PASS] = (first["paths"], first[target_precision], first[0.8])
        fit_rows = np.flatnonzero((fold != f) & (known_pool != NO_LABEL))
        for name in baselines:
            paths = _baseline(name, pool, fit_rows, rows, texts, table)
            outcomes[name] = (paths, metrics.path_end(*paths)[0], None)
        for name, (paths, decision, at_08) in outcomes.items():
            per_system.setdefault(name, []).append(_fold_metrics(name, paths, decision, labels, table, at_08))
            pooled.setdefault(name, []).append((labels, paths))
        progress(f"fold {f + 1}/{folds}: {len(test)} products, {len(np.unique(labels.store))} stores; "
                 + ", ".join(f"{n} hF1 {m[-1]['hF1']:.3f}" for n, m in per_system.items())
                 + f" ({time.monotonic() - started:.0f} s)")
    result = {"folds": folds, "max_products_per_store": max_products_per_store,
              "target_precision": target_precision,
              "flagged_weight": flagged_weight, "capped_training": capped_training,
              "stores": int(len(np.unique(scored.store))), "products": int(len(scored.gpt_id)),
              "systems": {name: {"per_fold": folds_, "summary": _summary(folds_)}
                          for name, folds_ in per_system.items()},
              "curves": {name: _curve(name, parts, table) for name, parts in pooled.items()},
              "ours_weights_last_fold": {"temperatures": ours["temperatures"], "weights": ours["weights"]},
              "seconds": round(time.monotonic() - started, 1)}
    write(result, Path(output))
    return result


def _baseline(name: str, pool: Mapping[str, np.ndarray], fit_rows: np.ndarray, rows: np.ndarray,
              texts: Mapping[str, str], table: metrics.AncestorTable) -> Paths:
    gpt, x = pool["gpt_id"], np.concatenate([pool[TEXT_EMBEDDING], pool[TITLE_EMBEDDING]], axis=1)
    if name == FLAT_LR:
        stores = pool["store"][fit_rows]
        return baseline_models.flat_lr_paths(x[fit_rows], gpt[fit_rows], stores, x[rows], table)
    if name == LEVEL_LR:
        return baseline_models.per_level_lr_paths(x[fit_rows], table.path_of(gpt[fit_rows]), x[rows], table)
    if name == TFIDF:
        model = baseline_models.TfidfSvm().fit([texts[p] for p in pool["product_id"][fit_rows]],
                                               gpt[fit_rows], pool["store"][fit_rows])
        probabilities = model.probabilities([texts[p] for p in pool["product_id"][rows]])
        return baseline_models.flat_paths(probabilities, model.classes, table)
    raise ValueError(f"unknown baseline {name!r}; choose from {BASELINES}")


def _curve(name: str, parts: Sequence[tuple[Labels, Paths]], table: metrics.AncestorTable) -> list[dict]:
    """The risk–coverage curve of a system over all folds' products: one threshold for every level."""
    labels = Labels(*(np.concatenate([getattr(p[0], f) for p in parts]) for f in ("product_ids", "gpt_id",
                                                                                 "lang", "store")))
    level_ids = np.concatenate([p[1][0] for p in parts])
    confidences = np.concatenate([p[1][1] for p in parts])
    system = SystemOutput(name, labels.product_ids, metrics.path_end(level_ids, confidences)[0], level_ids,
                          confidences, {})
    points = report.operating_curve(system, labels, table, report.uniform_settings(41), back_off=True)
    return [{"threshold": p.setting, "coverage": p.coverage, "hP": p.hP, "hF1": p.hF1} for p in points]


def write(result: dict, output: Path) -> None:
    """crossval.json, crossval.md (the table) and crossval.png (risk–coverage curves)."""
    output.mkdir(parents=True, exist_ok=True)
    (output / CROSSVAL_JSON).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    columns = ("hF1_full_path", "level1_accuracy", "hF1", "hP", "coverage", "coverage_at_hP_0.80")
    lines = [f"# Store-grouped cross-validation ({result['folds']} folds, {result['stores']} stores, "
             f"{result['products']} products, ≤{result['max_products_per_store']} per store)", "",
             f"Default decision: ours at target precision {result['target_precision']}; baselines always "
             "answer. Mean ± standard deviation over folds.", "",
             "| system | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, entry in result["systems"].items():
        summary = entry["summary"]
        lines.append(f"| {TITLES.get(name, name)} | " + " | ".join(
            f"{summary[c]['mean']:.3f} ± {summary[c]['sd']:.3f}" for c in columns) + " |")
    (output / CROSSVAL_MD).write_text("\n".join(lines) + "\n", encoding="utf-8")
    _plot(result, output / "crossval.png")


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(7, 5))
    for name, points in result["curves"].items():
        axes.plot([p["coverage"] for p in points], [p["hP"] for p in points], marker=".",
                  label=TITLES.get(name, name))
    axes.axhline(report.HP_FLOOR, color="grey", linestyle=":")
    axes.set(xlabel="coverage", ylabel="hierarchical precision", title="risk–coverage, store-grouped CV",
             xlim=(0, 1.02), ylim=(0, 1.02))
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
