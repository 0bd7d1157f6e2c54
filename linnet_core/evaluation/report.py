"""Metrics per system and per group, operating curves, and the metrics.json / report.md writers."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from linnet_core import metrics
from linnet_core.calibration.thresholds import Thresholds, cut_paths
from linnet_core.evaluation.systems import Labels, SystemOutput
from linnet_core.features import LEVELS

HP_FLOOR = 0.80
UNLABELLED = "(unlabelled)"


@dataclass(frozen=True)
class OperatingPoint:
    """One setting of a system's thresholds and what it gives on the evaluated products."""

    setting: str
    coverage: float
    hP: float  # noqa: N815 (the metric's name)
    hR: float  # noqa: N815
    hF1: float  # noqa: N815


def system_metrics(system: SystemOutput, labels: Labels, table: metrics.AncestorTable) -> dict:
    """metrics.compute_metrics of one system at its default decision."""
    return metrics.compute_metrics(system.gpt_id, labels.gpt_id, table, system.level_ids,
                                   system.level_confidences)


def operating_curve(system: SystemOutput, labels: Labels, table: metrics.AncestorTable,
                    settings: Sequence[tuple[str, Thresholds]], back_off: bool) -> list[OperatingPoint]:
    """Coverage and hierarchical P/R/F1 of the system's decoded paths cut by each thresholds setting."""
    points = []
    for setting, thresholds in settings:
        predicted = cut_paths(system.level_ids, system.level_confidences, thresholds, back_off=back_off)
        joined = metrics.Joined.build(predicted, labels.gpt_id, table)
        h_precision, h_recall, h_f1 = metrics.hierarchical_prf(joined)
        points.append(OperatingPoint(setting, metrics.coverage(joined), h_precision, h_recall, h_f1))
    return points


def uniform_settings(steps: int = 41,
                     overrides: dict[int, float] | None = None) -> list[tuple[str, Thresholds]]:
    """One threshold t for every level, t from 0 to 1 (plus fixed floors): the sweep of a hand-set
    per-level design."""
    return [(f"t={t:.3f}", Thresholds(f"uniform-{t:.3f}", (float(t),) * LEVELS,
                                      overrides=dict(overrides or {})))
            for t in np.linspace(0.0, 1.0, steps)]


def coverage_at_precision(points: Sequence[OperatingPoint], floor: float = HP_FLOOR) -> OperatingPoint | None:
    """The point of largest coverage whose hP is at least `floor` (None when no point reaches it)."""
    eligible = [p for p in points if not math.isnan(p.hP) and p.hP >= floor and p.coverage > 0]
    return max(eligible, key=lambda p: (p.coverage, p.hP)) if eligible else None


def branch_names(labels: Labels, table: metrics.AncestorTable) -> np.ndarray:
    """The level-1 branch name of each product's label ("(unlabelled)" when none)."""
    roots = table.path_of(labels.gpt_id)[:, 0]
    names = {int(r): table.taxonomy.node(int(r)).name for r in np.unique(roots) if r != metrics.NONE}
    return np.array([names.get(int(r), UNLABELLED) for r in roots], dtype=object)


def breakdown(systems: Sequence[SystemOutput], labels: Labels, table: metrics.AncestorTable,
              groups: np.ndarray) -> list[dict]:
    """Per group value (largest first): n, labelled n, and each system's coverage, hP, hR, hF1, exact."""
    rows = []
    values, counts = np.unique(groups.astype(str), return_counts=True)
    for value, count in sorted(zip(values, counts, strict=True), key=lambda vc: (-vc[1], vc[0])):
        mask = groups.astype(str) == value
        row = {"group": str(value), "n": int(count), "n_labelled": int((labels.gpt_id[mask] != -1).sum())}
        for system in systems:
            joined = metrics.Joined.build(system.gpt_id[mask], labels.gpt_id[mask], table)
            h_precision, h_recall, h_f1 = metrics.hierarchical_prf(joined)
            row[system.name] = {"coverage": metrics.coverage(joined), "hP": h_precision, "hR": h_recall,
                                "hF1": h_f1, "exact_accuracy": metrics.exact_accuracy(joined)}
        rows.append(row)
    return rows


def level1_confusion(system: SystemOutput, labels: Labels,
                     table: metrics.AncestorTable) -> tuple[list[str], np.ndarray]:
    """Counts [true level-1 branch, decoded level-1 branch before thresholds] (thresholds only decide
    whether it is shown, so this is what the model believes); the last column counts empty paths."""
    roots = [node.id for node in table.taxonomy.roots]
    index = {root: i for i, root in enumerate(roots)}
    true = table.path_of(labels.gpt_id)[:, 0]
    predicted = system.level_ids[:, 0]
    matrix = np.zeros((len(roots), len(roots) + 1), dtype=np.int64)
    for t, p in zip(true, predicted, strict=True):
        if t != metrics.NONE:
            matrix[index[int(t)], index[int(p)] if p != metrics.NONE else len(roots)] += 1
    return [table.taxonomy.node(r).name for r in roots], matrix


def to_json_safe(value):
    """NaN → None, numpy scalars → Python, recursively (metrics.json is strict JSON)."""
    if isinstance(value, dict):
        return {str(k): to_json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_metrics_json(path: Path, result: dict) -> None:
    path.write_text(json.dumps(to_json_safe(result), indent=2, allow_nan=False) + "\n", encoding="utf-8")


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
    """A markdown table (floats to 3 digits, NaN and None as –) and a blank line."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines + [""]


def _distinct(points: Sequence[dict]) -> list[dict]:
    """Operating points without runs of identical outcomes (keeps the first setting of each run)."""
    kept: list[dict] = []
    for point in points:
        outcome = [point[k] for k in ("coverage", "hP", "hR")]
        if not kept or [kept[-1][k] for k in ("coverage", "hP", "hR")] != outcome:
            kept.append(point)
    return kept


def render_report(result: dict, titles: dict[str, str], descriptions: dict[str, str],
                  plots: Sequence[str]) -> str:
    """report.md from the evaluation result (the same dict metrics.json holds)."""
    names = list(result["systems"])
    header = ["metric"] + [titles.get(n, n) for n in names]
    keys = ("hP", "hR", "hF1", "exact_accuracy", "coverage", "leaf_coverage", "leaf_precision", "aurc")
    lines = [f"# LinNét evaluation: {result['n']} products, {result['n_labelled']} labelled", "",
             f"model `{result['model_version']}`, taxonomy `{result['taxonomy_version']}`, "
             f"thresholds `{result['thresholds_version']}`.", ""]
    if result.get("unseen_label_share") is not None:
        lines += [f"{_fmt(100 * result['unseen_label_share'], 1)}% of the evaluated labels never occur in "
                  "the training split: no leaf classifier can get those exactly right.", ""]
    lines += ["## Systems side by side (default decision of each)", ""]
    lines += [f"- **{titles.get(n, n)}**: {descriptions[n]}" for n in names if n in descriptions]
    lines += ["", f"Compared on the same {result['n_compared']} products; unlabelled products count in "
                  "coverage only.", ""]
    lines += markdown_table(header, [[k] + [result["systems"][n].get(k) for n in names] for k in keys])
    comparison = result["comparison"]
    lines += [f"## Coverage at hierarchical precision ≥ {comparison['hp_floor']:.2f}", "",
              "Largest coverage over each system's own operating curve whose hP reaches the floor.", ""]
    lines += markdown_table(["system", "coverage", "hP", "hF1", "setting"], [
        [titles.get(n, n)] + ([p["coverage"], p["hP"], p["hF1"], p["setting"]] if p else ["–"] * 4)
        for n, p in comparison["best_at_floor"].items()])
    lines += [f"- hF1 of ours beats (a) and (b): **{comparison['ours_beats_baselines_on_hF1']}**",
              f"- coverage of ours / coverage of the published design at hP ≥ {comparison['hp_floor']:.2f}: "
              f"**{_fmt(comparison['coverage_ratio_vs_published'], 2)}** (target ≥ 2; "
              f"{'(b) never reaches the floor; ' if not comparison['published_reaches_floor'] else ''}"
              f"target met: **{comparison.get('ours_doubles_published_coverage')}**); over the "
              f"ablation, (b)'s decision on ours' scores: "
              f"**{_fmt(comparison['coverage_ratio_vs_published_on_ours'], 2)}**", ""]
    unseen = result.get("targets_on_unseen_stores")
    if unseen:
        lines += ["## Do the precision targets hold on unseen stores?", "",
                  f"Ours on the calibration set of `linnet tune-thresholds` ({unseen['n']} products, "
                  f"{unseen['stores']} stores, at most 150 each): per target, thresholds tuned on "
                  f"{unseen['folds'] - 1} of {unseen['folds']} store folds cut the paths of the held-out "
                  "fold, so every product is judged by thresholds that never saw its store.", ""]
        lines += markdown_table(["target", "hP", "coverage", "hR", "hF1", "exact accuracy"], [
            [p["target"], p["hP"], p["coverage"], p["hR"], p["hF1"], p["exact_accuracy"]]
            for p in unseen["points"]])
    capped = result.get("capped_per_store")
    if capped:
        cap = capped["max_products_per_store"]
        lines += [f"## At most {cap} products per store (as the acceptance set)", "",
                  f"Ours on {capped['n']} of the {result['n']} products ({capped['n_stores']} stores; each "
                  f"keeps the {cap} with the smallest sha256 of product_id): hF1 "
                  f"{_fmt(capped['hF1'])}, hP {_fmt(capped['hP'])}, coverage {_fmt(capped['coverage'])}. "
                  "Systems side by side on the compared products, capped the same way:", ""]
        capped_names = [n for n in names if n in capped["systems"]]
        rows = [[k] + [capped["systems"][n].get(k) for n in capped_names] for k in keys if k != "aurc"]
        rows += [["level-1 accuracy"] + [capped["systems"][n]["level_accuracy"][0] for n in capped_names],
                 ["n"] + [capped["systems"][n]["n"] for n in capped_names]]
        lines += markdown_table(["metric"] + [titles.get(n, n) for n in capped_names], rows)
    lines += ["## Per level (ours)", ""]
    ours = result["systems"][names[-1]]
    lines += markdown_table(["level", "accuracy", "depth coverage", "ECE"], [
        [k + 1, ours["level_accuracy"][k], ours["depth_coverage"][k], ours["ece"][k]]
        for k in range(len(ours["level_accuracy"]))])
    curve = result["operating_curves"].get(names[-1], [])
    if curve:
        lines += ["## The trade-off to choose (ours): operating curve", ""]
        lines += markdown_table(["setting", "coverage", "hP", "hR", "hF1"],
                        [[p["setting"], p["coverage"], p["hP"], p["hR"], p["hF1"]] for p in _distinct(curve)])
    for title, key in (("level-1 branch of the label", "by_branch"), ("language", "by_language")):
        lines += [f"## By {title}", ""]
        group_header = ["group", "n", "labelled"] + [f"{titles.get(n, n)} {m}" for n in names
                                                     for m in ("cov", "hP", "hF1")]
        lines += markdown_table(group_header, [
            [row["group"], row["n"], row["n_labelled"]]
            + [row[n][m] for n in names for m in ("coverage", "hP", "hF1")] for row in result[key]])
    lines += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + [""]
    return "\n".join(lines)


def points_as_dicts(points: Sequence[OperatingPoint]) -> list[dict]:
    return [asdict(p) for p in points]
