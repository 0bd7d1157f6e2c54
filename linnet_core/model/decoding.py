"""Constrained decoding and thresholds as TensorFlow ops over per-level logits.

Every probability below (sibling, per-level, path) is a softmax of the *fused* logits
L'_k = L_k / T_k + Σ_e w_e,k · E_e,k (`linnet_core.model.evidence`); all weights 0 is plain
temperature scaling.

Confidence is the *path probability*: the product, from level 1 down to a node, of each node's
probability renormalised over its siblings (softmax of the temperature-scaled logits over the
children of its parent). It is the model's probability that the product lies in the node's subtree,
so it never rises along a path, and cutting the path before its first node below threshold keeps
exactly the deepest prefix that clears every threshold (back-off to a confident ancestor).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from linnet_core.calibration.thresholds import EVIDENCE, PRODUCT_EVIDENCE, Thresholds
from linnet_core.decisions import ABSTAINED, BACKED_OFF, LEAF
from linnet_core.features import LEVELS, NO_LABEL
from linnet_core.model.evidence import Evidence, fused_logits
from linnet_core.taxonomy import Taxonomy, TaxonomyError

GREEDY = "greedy"
EXACT = "exact"
MODES = (GREEDY, EXACT)


@dataclass(frozen=True)
class DecodingTables:
    """Taxonomy structure as per-level arrays indexed by class index (level_ids order).

    Attributes:
        node_ids: per level, int64[n_k] node id of each class.
        parents: per level, int32[n_k] class index of the parent at level k-1 (-1 at level 1).
        has_children: per level, bool[n_k].
        leaf_paths: int32[num_leaves, D] per-level class indexes of every leaf's path, -1 past it.
        floors: per level, float32[n_k] max override on the node or any ancestor (0 if none).
    """

    node_ids: tuple[np.ndarray, ...]
    parents: tuple[np.ndarray, ...]
    has_children: tuple[np.ndarray, ...]
    leaf_paths: np.ndarray
    floors: tuple[np.ndarray, ...]

    @property
    def depth(self) -> int:
        return len(self.node_ids)

    @classmethod
    def build(cls, taxonomy: Taxonomy, overrides: dict[int, float] | None = None) -> DecodingTables:
        """Tables of `taxonomy`; `overrides` (node id → floor) become subtree floors.

        Raises:
            TaxonomyError: an override names a node the taxonomy lacks, or the taxonomy is deeper
                than the model's LEVELS outputs.
        """
        if taxonomy.max_depth > LEVELS:
            raise TaxonomyError(f"taxonomy depth {taxonomy.max_depth} exceeds {LEVELS} levels")
        overrides = overrides or {}
        for node_id in overrides:
            taxonomy.node(node_id)
        depth = taxonomy.max_depth
        levels = [taxonomy.level_ids(k) for k in range(1, depth + 1)]
        parents, has_children, floors = [], [], []
        for ids in levels:
            parents.append(np.array([
                taxonomy.level_index(p.id) if (p := taxonomy.parent(i)) is not None else NO_LABEL
                for i in ids], np.int32))
            has_children.append(np.array([bool(taxonomy.node(i).children) for i in ids]))
            floors.append(np.array([
                max([overrides.get(a.id, 0.0) for a in taxonomy.ancestors(i, include_self=True)])
                for i in ids], np.float32))
        leaf_paths = np.array([taxonomy.level_labels(leaf.id) for leaf in taxonomy.leaves], np.int32)
        return cls(tuple(np.array(ids, np.int64) for ids in levels), tuple(parents),
                   tuple(has_children), leaf_paths.reshape(-1, depth), tuple(floors))


def sibling_log_probs(logits: list[tf.Tensor], tables: DecodingTables, temperatures: tf.Tensor,
                      evidence: tuple[Evidence, ...] = ()) -> list[tf.Tensor]:
    """Per level, log of each class's probability renormalised over its siblings, float32[B, n_k].

    Renormalising softmax of the fused logits over a sibling group equals a softmax over that group
    alone, so this is the fused logit minus the group's logsumexp, computed stably with segment max
    and sum.
    """
    result = []
    for k, scaled in enumerate(fused_logits(logits, temperatures, evidence)):
        if k == 0:
            result.append(tf.nn.log_softmax(scaled, axis=-1))
            continue
        parents = tf.constant(tables.parents[k])
        groups = len(tables.parents[k - 1])
        by_class = tf.transpose(scaled)
        group_max = tf.math.unsorted_segment_max(by_class, parents, groups)
        shifted = by_class - tf.gather(group_max, parents)
        group_sum = tf.math.unsorted_segment_sum(tf.exp(shifted), parents, groups)
        result.append(tf.transpose(shifted - tf.math.log(tf.gather(group_sum, parents))))
    return result


def level_probabilities(logits: list[tf.Tensor], temperatures: tf.Tensor,
                        evidence: tuple[Evidence, ...] = ()) -> list[tf.Tensor]:
    """Per level, the softmax of the fused logits over all classes of the level (no parent constraint)."""
    return [tf.nn.softmax(z, axis=-1) for z in fused_logits(logits, temperatures, evidence)]


def greedy_paths(log_probs: list[tf.Tensor], tables: DecodingTables) -> tf.Tensor:
    """The published decoding: best level-1 class, then the best child of the chosen node, until a
    leaf. Returns int32[B, D] class indexes, -1 past the path's end."""
    choice = tf.argmax(log_probs[0], axis=-1, output_type=tf.int32)
    path = [choice]
    for k in range(1, tables.depth):
        allowed = tf.equal(tf.constant(tables.parents[k])[tf.newaxis, :], choice[:, tf.newaxis])
        masked = tf.where(allowed, log_probs[k], -np.inf)
        child = tf.argmax(masked, axis=-1, output_type=tf.int32)
        has_children = tf.gather(tf.constant(tables.has_children[k - 1]), tf.maximum(choice, 0))
        choice = tf.where((choice >= 0) & has_children, child, NO_LABEL)
        path.append(choice)
    return tf.stack(path, axis=1)


def exact_paths(log_probs: list[tf.Tensor], tables: DecodingTables) -> tf.Tensor:
    """The most probable root-to-leaf path: every leaf scored by the sum of its ancestors' sibling
    log probabilities (its own levels only), then argmax. Returns int32[B, D] like greedy_paths."""
    leaf_paths = tf.constant(tables.leaf_paths)
    scores = 0.0
    for k in range(tables.depth):
        column = leaf_paths[:, k]
        gathered = tf.gather(log_probs[k], tf.maximum(column, 0), axis=1)
        scores += tf.where(column[tf.newaxis, :] >= 0, gathered, 0.0)
    best = tf.argmax(scores, axis=-1, output_type=tf.int32)
    return tf.gather(leaf_paths, best)


def path_confidences(log_probs: list[tf.Tensor], paths: tf.Tensor) -> tf.Tensor:
    """Path probability of each node on the paths, float32[B, D], 0 past the path's end."""
    valid = paths >= 0
    steps = tf.stack([
        tf.gather(log_probs[k], tf.maximum(paths[:, k], 0), axis=1, batch_dims=1)
        for k in range(len(log_probs))], axis=1)
    return tf.where(valid, tf.exp(tf.cumsum(tf.where(valid, steps, 0.0), axis=1)), 0.0)


def cut_depth(paths: tf.Tensor, confidences: tf.Tensor, tables: DecodingTables,
              level_thresholds: tf.Tensor, use_overrides: tf.Tensor) -> tf.Tensor:
    """Depth of the kept prefix, int32[B]: the path is cut before its first node whose confidence is
    below its threshold, max(level threshold, subtree floors of the node) with overrides on."""
    thresholds = []
    for k in range(tables.depth):
        floor = tf.gather(tf.constant(tables.floors[k]), tf.maximum(paths[:, k], 0))
        level = tf.fill(tf.shape(floor), level_thresholds[k])
        thresholds.append(tf.where(use_overrides, tf.maximum(level, floor), level))
    passed = (paths >= 0) & (confidences >= tf.stack(thresholds, axis=1))
    return tf.reduce_sum(tf.math.cumprod(tf.cast(passed, tf.int32), axis=1), axis=1)


def decode(logits: list[tf.Tensor], tables: DecodingTables, temperatures: tf.Tensor,
           mode: tf.Tensor, level_thresholds: tf.Tensor, use_overrides: tf.Tensor,
           evidence: tuple[Evidence, ...] = ()) -> dict[str, tf.Tensor]:
    """Decode, score and cut: the inference model's outputs (docs/ARCHITECTURE.md), padded to LEVELS.

    Args:
        logits: per level float[B, n_k] raw logits of the training model.
        temperatures: float32[>= D] per-level temperatures.
        mode: string scalar, "exact" or "greedy" (anything else fails with InvalidArgumentError).
        level_thresholds: float32[>= D] per-level thresholds on path probability.
        use_overrides: bool scalar; False ignores the per-node floors.
        evidence: (per level float32[B, n_k] scores, float32[>= D] their weights) pairs fused into the
            logits (none: the network alone).
    """
    log_probs = sibling_log_probs(logits, tables, temperatures, evidence)
    check = tf.debugging.Assert(tf.reduce_any(tf.equal(mode, MODES)),
                                ["decoding must be 'exact' or 'greedy', got", mode])
    with tf.control_dependencies([check]):
        paths = tf.cond(tf.equal(mode, GREEDY), lambda: greedy_paths(log_probs, tables),
                        lambda: exact_paths(log_probs, tables))
    confidences = path_confidences(log_probs, paths)
    depth = cut_depth(paths, confidences, tables, level_thresholds, use_overrides)
    node_ids = tf.stack([
        tf.where(paths[:, k] >= 0, tf.gather(tf.constant(tables.node_ids[k]), tf.maximum(paths[:, k], 0)),
                 tf.constant(NO_LABEL, tf.int64))
        for k in range(tables.depth)], axis=1)
    path_length = tf.reduce_sum(tf.cast(paths >= 0, tf.int32), axis=1)
    chosen = tf.gather(node_ids, tf.maximum(depth - 1, 0), axis=1, batch_dims=1)
    padding = [[0, 0], [0, LEVELS - tables.depth]]
    batch = tf.shape(depth)
    return {
        "level_ids": tf.pad(node_ids, padding, constant_values=NO_LABEL),
        "level_confidences": tf.pad(confidences, padding),
        "gpt_id": tf.where(depth > 0, chosen, tf.constant(NO_LABEL, tf.int64)),
        "depth": depth,
        "decision": tf.where(depth == 0, ABSTAINED, tf.where(depth == path_length, LEAF, BACKED_OFF)),
        "decoding": tf.fill(batch, mode),
    }


def thresholds_vector(thresholds: Thresholds, name: str) -> np.ndarray:
    """`levels` or `temperatures` of a calibration file, or the weights of an evidence, as float32[LEVELS]."""
    values = thresholds.weights(name) if name in EVIDENCE else getattr(thresholds, name)
    return np.asarray(values, np.float32)


def first_pass_vectors(thresholds: Thresholds) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The first pass's temperatures and product-evidence weights as float32[LEVELS] (with no first pass:
    the thresholds' own, store context left out)."""
    first = thresholds.first_pass
    temperatures = first.temperatures if first is not None else thresholds.temperatures
    weights = {name: (first.weights(name) if first is not None else thresholds.weights(name))
               for name in PRODUCT_EVIDENCE}
    return (np.asarray(temperatures, np.float32),
            {name: np.asarray(w, np.float32) for name, w in weights.items()})
