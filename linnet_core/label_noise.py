"""Seeded label flips for measuring the label audit: a share of labels moved to a sibling (a near miss
inside the right branch) and a share moved to another level-1 branch (a store filing sneakers under
Home & Garden). Pure numpy; the flipped labels keep their depth, so per-level weights still line up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from linnet_core.features import label_feature
from linnet_core.taxonomy import Taxonomy

SIBLING, OTHER_BRANCH = "sibling", "other_branch"
KINDS = (SIBLING, OTHER_BRANCH)


@dataclass(frozen=True)
class Flips:
    """`gpt_id`: every label after the flips; `rows`: the flipped rows; `kind`: SIBLING or OTHER_BRANCH
    per flipped row; `original`: their labels before."""

    gpt_id: np.ndarray
    rows: np.ndarray
    kind: np.ndarray
    original: np.ndarray


def inject_flips(gpt_id: np.ndarray, taxonomy: Taxonomy, sibling_rate: float = 0.05,
                 branch_rate: float = 0.05, seed: int = 0) -> Flips:
    """Flip `sibling_rate` of the labels to a uniformly drawn sibling and `branch_rate` to a label of
    the same depth in another level-1 branch, drawn as often as the data uses it (real mistakes land on
    real categories). Rows without a possible flip of a kind are never drawn for it.

    Raises:
        ValueError: a rate outside [0, 1], or rates summing above 1.
    """
    if not (0 <= sibling_rate <= 1 and 0 <= branch_rate <= 1 and sibling_rate + branch_rate <= 1):
        raise ValueError(f"flip rates must be in [0, 1] and sum to at most 1, got {sibling_rate}, "
                         f"{branch_rate}")
    rng = np.random.default_rng(seed)
    gpt_id = np.asarray(gpt_id, np.int64)
    known = np.array([int(i) in taxonomy for i in gpt_id])
    depth = np.array([taxonomy.node(int(i)).depth if k else 0 for i, k in zip(gpt_id, known, strict=True)])
    branch = np.array([taxonomy.ancestors(int(i), include_self=True)[0].id if k else -1
                       for i, k in zip(gpt_id, known, strict=True)])
    siblings = {int(i): [c.id for c in taxonomy.children(taxonomy.parent(int(i)).id) if c.id != i]
                for i in np.unique(gpt_id[depth >= 2])}
    can_sibling = np.array([d >= 2 and bool(siblings[int(i)]) for i, d in zip(gpt_id, depth, strict=True)])
    n = len(gpt_id)
    order = rng.permutation(n)
    to_sibling = [i for i in order if can_sibling[i]][:round(sibling_rate * n)]
    taken = set(to_sibling)
    # Another branch at the same depth, drawn by how often the data uses each label.
    to_branch = [i for i in order if known[i] and i not in taken
                 and ((depth == depth[i]) & (branch != branch[i]) & known).any()][:round(branch_rate * n)]
    noisy = gpt_id.copy()
    for i in to_sibling:
        noisy[i] = rng.choice(siblings[int(gpt_id[i])])
    for i in to_branch:
        noisy[i] = gpt_id[rng.choice(np.flatnonzero((depth == depth[i]) & (branch != branch[i]) & known))]
    rows = np.array(to_sibling + to_branch, np.int64)
    kind = np.array([SIBLING] * len(to_sibling) + [OTHER_BRANCH] * len(to_branch), dtype=object)
    return Flips(noisy, rows, kind, gpt_id[rows])


def relabelled(arrays: Mapping[str, np.ndarray], gpt_id: np.ndarray,
               taxonomy: Taxonomy) -> dict[str, np.ndarray]:
    """Training arrays (`model.data.read_splits`) with other labels: `gpt_id` and every `label_level_k`
    (class indexes, -1 past the label) from the new ids; the weights are left as they were."""
    levels = np.array([taxonomy.level_labels(int(i)) for i in gpt_id], np.int64).reshape(len(gpt_id), -1)
    return {**arrays, "gpt_id": np.asarray(gpt_id, np.int64),
            **{label_feature(k + 1): levels[:, k] for k in range(levels.shape[1])}}


def detection(flagged: np.ndarray, suggested_id: np.ndarray, row_of: Mapping[str, int],
              product_id: np.ndarray, flips: Flips) -> dict:
    """How an audit's flags (`flagged`, `suggested_id` per audited row; `row_of`: product_id → audited
    row) find the injected flips (`flips` rows index `product_id`).

    Per kind: injected, flagged (found), recall, precision (found / (found + flagged labels that were
    not flipped): the precision had only that kind been injected), restored (the suggestion is the
    label before the flip). "all": the same over both kinds, precision over every flag.
    """
    audited = np.array([row_of[str(product_id[i])] for i in flips.rows], np.int64)
    flipped = np.zeros(len(flagged), bool)
    flipped[audited] = True
    false_flags = int((flagged & ~flipped).sum())
    result = {}
    for kind in (*KINDS, "all"):
        mine = np.ones(len(audited), bool) if kind == "all" else flips.kind == kind
        found = flagged[audited[mine]]
        restored = suggested_id[audited[mine]][found] == flips.original[mine][found]
        tp = int(found.sum())
        result[kind] = {"injected": int(mine.sum()), "found": tp,
                        "recall": tp / int(mine.sum()) if mine.any() else float("nan"),
                        "precision": tp / (tp + false_flags) if tp + false_flags else float("nan"),
                        "restored": int(restored.sum())}
    result["flagged"] = int(flagged.sum())
    result["flagged_not_injected"] = false_flags
    result["audited"] = len(flagged)
    return result
