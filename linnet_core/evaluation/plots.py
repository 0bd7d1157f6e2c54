"""PNG plots of the report (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (the backend must be chosen first)
import numpy as np  # noqa: E402

from linnet_core import metrics  # noqa: E402
from linnet_core.evaluation.report import HP_FLOOR, OperatingPoint  # noqa: E402
from linnet_core.evaluation.systems import Labels, SystemOutput  # noqa: E402


def _save(figure, path: Path) -> str:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return str(path)


def risk_coverage_plot(systems: Sequence[SystemOutput], labels: Labels, titles: dict[str, str],
                       path: Path) -> str:
    """Error among covered vs coverage when thresholding each system's decoded-path end confidence."""
    figure, axis = plt.subplots(figsize=(6, 4.5))
    labelled = labels.gpt_id != metrics.NONE
    for system in systems:
        end, confidence = metrics.path_end(system.level_ids, system.level_confidences)
        wrong = end[labelled] != labels.gpt_id[labelled]
        _, coverage, risk = metrics.risk_coverage(confidence[labelled], wrong)
        area = metrics.aurc(confidence[labelled], wrong)
        axis.plot(coverage, risk, label=f"{titles.get(system.name, system.name)} (AURC {area:.3f})")
    axis.set(xlabel="coverage (share of labelled products)", ylabel="error among covered (not exact)",
             xlim=(0, 1), ylim=(0, 1), title="Risk–coverage of the decoded path's end")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return _save(figure, path)


def level_precision_plot(system: SystemOutput, labels: Labels, table: metrics.AncestorTable,
                         path: Path) -> str:
    """Per level: precision of the decoded level-k node vs the share of products keeping level k."""
    figure, axis = plt.subplots(figsize=(6, 4.5))
    true = table.path_of(labels.gpt_id)
    labelled = labels.gpt_id != metrics.NONE
    for k in range(table.max_depth):
        reached = labelled & (system.level_ids[:, k] != metrics.NONE)
        if reached.sum() < 10:
            continue
        right = system.level_ids[reached, k] == true[reached, k]
        _, coverage, risk = metrics.risk_coverage(system.level_confidences[reached, k], ~right)
        axis.plot(coverage * reached.sum() / labelled.sum(), 1 - risk, label=f"level {k + 1}")
    axis.set(xlabel="share of labelled products with a level-k node ≥ threshold",
             ylabel="precision at level k",
             xlim=(0, 1), ylim=(0, 1.02), title="Precision vs coverage per level")
    axis.grid(alpha=0.3)
    if axis.lines:
        axis.legend(fontsize=8)
    return _save(figure, path)


def operating_curves_plot(curves: dict[str, list[OperatingPoint]], defaults: dict[str, OperatingPoint],
                          titles: dict[str, str], path: Path) -> str:
    """hP vs coverage along each system's threshold sweep, default decisions marked."""
    figure, axis = plt.subplots(figsize=(6, 4.5))
    for name, points in curves.items():
        ordered = sorted(points, key=lambda p: p.coverage)
        line, = axis.plot([p.coverage for p in ordered], [p.hP for p in ordered], marker=".",
                          label=titles.get(name, name))
        if name in defaults:
            axis.plot(defaults[name].coverage, defaults[name].hP, marker="*", markersize=14,
                      color=line.get_color())
    axis.axhline(HP_FLOOR, color="grey", linestyle="--", linewidth=1)
    axis.set(xlabel="coverage", ylabel="hierarchical precision", xlim=(0, 1.02), ylim=(0, 1.02),
             title="Operating curves (★ = default decision)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return _save(figure, path)


def confusion_plot(names: list[str], matrix: np.ndarray, path: Path) -> str:
    """Row-normalised confusion between level-1 branches (last column: no decoded path)."""
    rows = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    figure, axis = plt.subplots(figsize=(9, 8))
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    short = [name[:18] for name in names]
    axis.set_xticks(range(len(names) + 1), short + ["(none)"], rotation=90, fontsize=7)
    axis.set_yticks(range(len(names)), [f"{n} ({int(r)})" for n, r in zip(short, rows[:, 0], strict=True)],
                    fontsize=7)
    axis.set(xlabel="decoded level-1 branch (before thresholds)",
             ylabel="true level-1 branch (labelled products)", title="Level-1 confusion (row share)")
    figure.colorbar(image, ax=axis, fraction=0.04)
    return _save(figure, path)


def label_audit_plot(given_probability: np.ndarray, suggested_probability: np.ndarray, flagged: np.ndarray,
                     branch_names: Sequence[str], branch_shares: Sequence[float], path: Path) -> str:
    """Left: where each disputed label's path parts from the model's, the label's probability against
    the model's node's (flagged ones in red). Right: the share of each level-1 branch's labels flagged."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.8))
    disputed = ~np.isnan(given_probability)
    for mask, colour, name in ((disputed & ~flagged, "0.6", "not flagged"), (flagged, "tab:red", "flagged")):
        left.scatter(given_probability[mask], suggested_probability[mask], s=6, alpha=0.5, c=colour,
                     label=f"{name} ({int(mask.sum())})")
    left.plot([0, 1], [0, 1], color="black", linewidth=0.6, linestyle=":")
    left.set(xlabel="label's path probability where the paths part", ylabel="model's node's path probability",
             xlim=(0, 1), ylim=(0, 1), title="Labels the model disputes")
    left.legend(fontsize=8)
    order = np.argsort(branch_shares)
    right.barh(np.asarray(branch_names, dtype=object)[order], np.asarray(branch_shares)[order],
               color="tab:red")
    right.set(xlabel="share of the branch's labels flagged", xlim=(0, 1), title="Flagged by level-1 branch")
    right.tick_params(axis="y", labelsize=7)
    return _save(figure, path)
