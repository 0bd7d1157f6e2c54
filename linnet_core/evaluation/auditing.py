"""The label audit of a model's training data (`linnet audit-labels`): every labelled product scored by
networks that never saw its store (`tuning.calibration_set`, the cross-fitting of `tune-thresholds`),
fused as tuning fuses them, audited by `linnet_core.label_audit`; the review tables, a report section
with its plot; and the audit measured on seeded label flips (`linnet_core.label_noise`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from linnet_core import label_audit, label_noise, metrics
from linnet_core.calibration.tuning import calibration_set, fit_fusion
from linnet_core.capped_sample import capped_rows
from linnet_core.evaluation.report import markdown_table, to_json_safe
from linnet_core.features import NO_LABEL
from linnet_core.taxonomy import Taxonomy
from linnet_core.training_data import DEFAULT_FOLDS, store_folds

logger = logging.getLogger(__name__)

REVIEW = "label_audit"  # .parquet and .csv: the review table
STORE_BRANCHES = "store_branches"  # .parquet and .csv
SUMMARY_JSON, REPORT_MD, PLOT_PNG = "label_audit.json", "label_audit.md", "label_audit.png"
NOISE_JSON, NOISE_MD = "label_noise.json", "label_noise.md"
EXAMPLES = 10


@dataclass(frozen=True)
class AuditedLabels:
    """The audit of N labelled products: ids, stores, labels (-1 where the taxonomy lacks them), the
    labels' ancestor paths and the `label_audit.Audit`."""

    product_id: np.ndarray
    store: np.ndarray
    gpt_id: np.ndarray
    given_paths: np.ndarray
    result: label_audit.Audit

    def flagged_ids(self) -> list[str]:
        return [str(p) for p in self.product_id[self.result.flagged]]


def flagged_products(audit_dir: str | Path) -> list[str]:
    """The product ids of an audit's review table (AUDIT_DIR/label_audit.parquet).

    Raises:
        FileNotFoundError: AUDIT_DIR has no review table.
    """
    path = Path(audit_dir, f"{REVIEW}.parquet")
    if not path.exists():
        raise FileNotFoundError(f"{audit_dir} has no {path.name}: not a `linnet audit-labels` output")
    return [str(p) for p in pd.read_parquet(path, columns=["product_id"])["product_id"]]


def audit_scored(scored, taxonomy: Taxonomy, mode: str = "exact", min_margin: float = 0.0) -> AuditedLabels:
    """Audit a cross-fitted `crossfit.CalibrationSet`: fuse it as `tune-thresholds` does (first pass,
    store context, fusion), decode it with the model's ops, and weigh each label's path probability
    against the decoded path."""
    from linnet_core.calibration import crossfit

    table = metrics.AncestorTable(taxonomy)
    fused, _, temperatures, weights = fit_fusion(scored, taxonomy)
    decoded, confidences = crossfit.decode_paths(fused, taxonomy, temperatures, weights, mode)
    given = crossfit.label_confidences(fused, taxonomy, temperatures, weights)
    known = np.where(np.isin(scored.gpt_id, table.ids), scored.gpt_id, NO_LABEL)
    paths = table.path_of(known)
    depth = taxonomy.max_depth
    result = label_audit.audit(paths, given, decoded[:, :depth], confidences[:, :depth],
                               min_margin=min_margin)
    return AuditedLabels(scored.product_id, scored.store, known, paths, result)


def audited_weights(model_dir: str | Path, data_dir: str | Path, taxonomy: Taxonomy, folds: int,
                    flagged_weight: float) -> Callable[[int, Mapping[str, np.ndarray]], np.ndarray]:
    """`crossfit.cross_fit`'s example weights for a cross-validation that trains on audited labels: for
    each held-out fold, the other folds' labels are audited by cross-fitting among those folds alone
    (no held-out label reaches the audit) and the flagged ones weigh `flagged_weight`."""
    from linnet_core.calibration import crossfit

    training = crossfit.FoldTraining.of(model_dir, data_dir, taxonomy)

    def weights(held_out: int, others: Mapping[str, np.ndarray]) -> np.ndarray:
        inner = store_folds(others["store"], folds)  # the outer folds but the held-out one
        audited = audit_scored(crossfit.cross_fit(training, others, inner, np.arange(len(inner))), taxonomy)
        flagged = audited.flagged_ids()
        logger.info("fold %d: the audit of the other folds flags %d of %d labels", held_out, len(flagged),
                    len(inner))
        return label_audit.example_factors(others["product_id"], flagged, flagged_weight)

    return weights


def audit_model_data(model_dir: str | Path, data_dir: str | Path, folds: int = DEFAULT_FOLDS,
                     min_margin: float = 0.0, relabel: Callable[[dict], dict] | None = None,
                     max_products_per_store: int | None = None) -> tuple[AuditedLabels, Taxonomy]:
    """Audit every labelled product of the splits MODEL learnt from, cross-fitted over `folds` store
    folds (`relabel`: the pool's arrays → the same with other labels). With `max_products_per_store`,
    only that many products per store (`capped_sample.capped_rows`) are trained on and audited: less CPU
    and memory, for a sample's figures. Returns the audit and the model's taxonomy.

    Raises:
        DataError, ModelDirError, ValueError (too few stores to cross-fit).
    """
    from linnet_core.model.export import TAXONOMY_COPY, read_model_json

    model_dir = Path(model_dir)
    taxonomy = Taxonomy.load(model_dir / TAXONOMY_COPY)
    mode = read_model_json(model_dir).get("default_decoding", "exact")
    def prepare(pool: dict) -> dict:
        if max_products_per_store:
            rows = capped_rows(pool["product_id"], pool["store"], max_products_per_store)
            pool = {name: values[rows] for name, values in pool.items()}
        return relabel(pool) if relabel else pool

    scored = calibration_set(model_dir, data_dir, taxonomy, folds, max_products_per_store=None,
                             prepare=prepare)
    return audit_scored(scored, taxonomy, mode, min_margin), taxonomy


def _write_table(frame: pd.DataFrame, output: Path, name: str) -> None:
    frame.to_parquet(output / f"{name}.parquet", index=False)
    frame.to_csv(output / f"{name}.csv", index=False)


def write_audit(audited: AuditedLabels, taxonomy: Taxonomy, output: str | Path) -> dict:
    """The review table and the store × branch table (Parquet and CSV), label_audit.json, the report
    section label_audit.md and its plot label_audit.png in `output`. Returns label_audit.json."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    result = audited.result
    review = label_audit.review_rows(result, audited.product_id, audited.store, audited.gpt_id, taxonomy)
    _write_table(pd.DataFrame(review, columns=list(label_audit.REVIEW_COLUMNS)), output, REVIEW)
    branches = label_audit.store_branches(audited.store, audited.given_paths, result)

    def name(node: int) -> str:
        return taxonomy.node(node).name if node != NO_LABEL else ""

    branch_rows = [{"store": b.store, "branch_id": b.branch, "branch": name(b.branch), "products": b.products,
                    "flagged": b.flagged, "share": b.share, "flagged_level1": b.flagged_level1,
                    "suggested_branch_id": b.suggested_branch, "suggested_branch": name(b.suggested_branch),
                    "suggested_share": b.suggested_share, "systematic": b.systematic} for b in branches]
    _write_table(pd.DataFrame(branch_rows), output, STORE_BRANCHES)
    labelled = audited.gpt_id != NO_LABEL
    summary = {
        "audited": int(labelled.sum()), "stores": int(len(np.unique(audited.store))),
        "flagged": int(result.flagged.sum()), "flagged_share": float(result.flagged[labelled].mean()),
        "flagged_by_level": {str(k): int((result.flagged & (result.level == k)).sum())
                             for k in range(1, taxonomy.max_depth + 1)},
        "systematic_store_branches": int(sum(b.systematic for b in branches)),
        "examples": review[:EXAMPLES],
    }
    (output / SUMMARY_JSON).write_text(json.dumps(to_json_safe(summary), indent=2) + "\n", encoding="utf-8")
    _write_report(summary, branch_rows, audited, taxonomy, output)
    return summary


def _write_report(summary: dict, branch_rows: list[dict], audited: AuditedLabels, taxonomy: Taxonomy,
                  output: Path) -> None:
    from linnet_core.evaluation.plots import label_audit_plot

    result, labelled = audited.result, audited.gpt_id != NO_LABEL
    branch = audited.given_paths[:, 0]
    roots = [int(b) for b in np.unique(branch[labelled])]
    shares = [float(result.flagged[branch == b].mean()) for b in roots]
    label_audit_plot(result.given_probability, result.suggested_probability, result.flagged,
                     [taxonomy.node(b).name for b in roots], shares, output / PLOT_PNG)
    systematic = [b for b in branch_rows if b["systematic"]]
    lines = ["## Label audit", "",
             f"{summary['audited']} labelled products of {summary['stores']} stores, each scored by "
             f"networks that never saw its store; {summary['flagged']} labels flagged "
             f"({summary['flagged_share']:.1%}): where the label's path and the model's part, the model's "
             "node reaches its confident threshold (the mean probability of the products labelled with "
             "it).", "",
             "Flagged by the level where the paths part: " + (", ".join(
                 f"level {k}: {n}" for k, n in summary["flagged_by_level"].items() if n) or "none") + ".", "",
             f"![label audit]({PLOT_PNG})", "", f"### The {EXAMPLES} highest-scored flags", ""]
    lines += markdown_table(["product", "store", "label", "suggested", "score", "distance"], [
        [e["product_id"], e["store"], e["given_path"], e["suggested_path"], e["score"], e["distance"]]
        for e in summary["examples"]])
    lines += [f"### Stores that disagree with the model systematically ({len(systematic)} store × branch)",
              "", f"At least {label_audit.SYSTEMATIC_MIN_PRODUCTS} labels in the branch, at least "
              f"{label_audit.SYSTEMATIC_SHARE:.0%} of them flagged.", ""]
    header = ["store", "labelled branch", "products", "flagged", "share", "moved to (level 1)"]
    lines += markdown_table(header, [
        [b["store"], b["branch"], b["products"], b["flagged"], b["share"],
         f"{b['suggested_branch']} ({b['suggested_share']:.0%})" if b["suggested_branch"] else "–"]
        for b in systematic[:20]])
    (output / REPORT_MD).write_text("\n".join(lines), encoding="utf-8")


def measure_noise(model_dir: str | Path, data_dir: str | Path, output: str | Path, folds: int = DEFAULT_FOLDS,
                  sibling_rate: float = 0.05, branch_rate: float = 0.05, seed: int = 0,
                  min_margin: float = 0.0, max_products_per_store: int | None = None) -> dict:
    """The audit on labels with seeded flips (`label_noise.inject_flips` before the cross-fitting, so the
    fold networks learn from them too): precision and recall per kind at the default cut, written to
    label_noise.json and label_noise.md beside the noisy audit's own tables."""
    injected: dict = {}

    def relabel(pool: Mapping[str, np.ndarray]) -> dict:
        flips = label_noise.inject_flips(pool["gpt_id"], taxonomy, sibling_rate, branch_rate, seed)
        injected.update(flips=flips, product_id=pool["product_id"])
        return label_noise.relabelled(pool, flips.gpt_id, taxonomy)

    from linnet_core.model.export import TAXONOMY_COPY

    taxonomy = Taxonomy.load(Path(model_dir, TAXONOMY_COPY))
    audited, _ = audit_model_data(model_dir, data_dir, folds, min_margin, relabel,
                                   max_products_per_store)
    write_audit(audited, taxonomy, output)
    row_of = {str(p): i for i, p in enumerate(audited.product_id)}
    found = label_noise.detection(audited.result.flagged, audited.result.suggested_id, row_of,
                                  injected["product_id"], injected["flips"])
    found.update(sibling_rate=sibling_rate, branch_rate=branch_rate, seed=seed, folds=folds,
                 max_products_per_store=max_products_per_store)
    output = Path(output)
    (output / NOISE_JSON).write_text(json.dumps(to_json_safe(found), indent=2) + "\n", encoding="utf-8")
    lines = [f"## The audit on injected label flips (seed {seed})", "",
             f"{found['audited']} labels, {sibling_rate:.0%} moved to a sibling and {branch_rate:.0%} to "
             f"another level-1 branch; {found['flagged']} flagged, {found['flagged_not_injected']} of them "
             "not injected (real label errors among them). Precision of a kind: found / (found + flags on "
             "labels that were not flipped).", ""]
    lines += markdown_table(["kind", "injected", "found", "recall", "precision", "suggestion = label before"],
                            [[kind, found[kind]["injected"], found[kind]["found"], found[kind]["recall"],
                              found[kind]["precision"], found[kind]["restored"]]
                             for kind in (*label_noise.KINDS, "all")])
    (output / NOISE_MD).write_text("\n".join(lines), encoding="utf-8")
    return found
