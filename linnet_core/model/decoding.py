"""Constrained decoding and thresholds as TensorFlow ops over per-level logits.

Before anything else the logits are *fused* with the evidence beside the network:
L'_k = L_k / T_k + Σ_e w_e,k · E_e,k, where each E_e,k holds one score per level-k class — the taxonomy
prior of the full text and of the title (per class, the highest cosine between the product's embedding
and the path embedding of any node in the class's subtree, `linnet_core.category_prior`) and the
exemplar shares (`linnet_core.exemplars`). All weights 0 is plain temperature scaling. Every
probability below (sibling, per-level, path) is a softmax of fused logits.

Confidence is the *path probability*: the product, from level 1 down to a node, of each node's
probability renormalised over its siblings (softmax of the temperature-scaled logits over the
children of its parent). It is the model's probability that the product lies in the node's subtree,
so it never rises along a path, and cutting the path before its first node below threshold keeps
exactly the deepest prefix that clears every threshold (back-off to a confident ancestor).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from linnet_core.calibration.thresholds import (
    EVIDENCE,
    EXEMPLAR_SHARES,
    PRODUCT_EVIDENCE,
    TEXT_PRIOR,
    TITLE_PRIOR,
    Thresholds,
)
from linnet_core.category_prior import CategoryEmbeddings, level_segments
from linnet_core.decisions import ABSTAINED, BACKED_OFF, LEAF
from linnet_core.exemplars import NEIGHBOURS, SHARPNESS, Exemplars
from linnet_core.features import LEVELS, NO_LABEL, TEXT_EMBEDDING, TITLE_EMBEDDING
from linnet_core.store_context import TOP_K, ContextLayout
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


@dataclass(frozen=True)
class PriorTables:
    """What the taxonomy prior needs: every node's path embedding and, per level, each node's
    segment (its level-k ancestor's class index; n_k, a dummy, for nodes shallower than k).

    Attributes:
        vectors: float32[num_nodes, dim], L2-normalised.
        segments: per level, int32[num_nodes].
        sizes: classes per level.
    """

    vectors: np.ndarray
    segments: tuple[np.ndarray, ...]
    sizes: tuple[int, ...]

    @classmethod
    def build(cls, taxonomy: Taxonomy, embeddings: CategoryEmbeddings) -> PriorTables:
        """Raises CategoryEmbeddingsError when the embeddings are not of this taxonomy's nodes."""
        embeddings.check(taxonomy)
        depth = taxonomy.max_depth
        return cls(embeddings.vectors.astype(np.float32),
                   tuple(level_segments(taxonomy, embeddings.ids, k) for k in range(1, depth + 1)),
                   tuple(taxonomy.level_sizes()))


@dataclass(frozen=True)
class ExemplarTables:
    """The exemplar memory as constants: unit vectors [M, dim], per level the class index of every
    exemplar (-1 past its label's depth), weights [M], classes per level."""

    vectors: np.ndarray
    labels: tuple[np.ndarray, ...]
    weights: np.ndarray
    sizes: tuple[int, ...]

    @classmethod
    def build(cls, taxonomy: Taxonomy, exemplars: Exemplars) -> ExemplarTables:
        """Raises ExemplarsError when the memory does not index this taxonomy."""
        exemplars.check(taxonomy)
        return cls(exemplars.vectors.astype(np.float32),
                   tuple(exemplars.labels[:, k].astype(np.int32) for k in range(taxonomy.max_depth)),
                   exemplars.weights.astype(np.float32), tuple(taxonomy.level_sizes()))


# Evidence: per level float32[B, n_k] scores and the level weights float32[>= D] that multiply them.
Evidence = tuple[list[tf.Tensor], tf.Tensor]


def taxonomy_priors(text_embedding: tf.Tensor, prior: PriorTables) -> list[tf.Tensor]:
    """Per level k, P_k float32[B, n_k]: max over the class's subtree (the node and its descendants)
    of cos(text embedding, node path embedding), as one matmul and a segment max per level."""
    text = tf.math.l2_normalize(tf.cast(text_embedding, tf.float32), axis=-1)
    by_node = tf.transpose(tf.matmul(text, tf.constant(prior.vectors), transpose_b=True))  # [nodes, B]
    return [tf.transpose(tf.math.unsorted_segment_max(by_node, tf.constant(segments), size + 1)[:size])
            for segments, size in zip(prior.segments, prior.sizes, strict=True)]


def exemplar_shares(title_embedding: tf.Tensor, memory: ExemplarTables) -> list[tf.Tensor]:
    """Per level k, float32[B, n_k]: the weighted share of the product's NEIGHBOURS nearest exemplars
    (cosine of title embeddings) labelled with each class, a neighbour weighing
    exp((cos − best cos) / SHARPNESS) × its store factor (linnet_core.exemplars)."""
    title = tf.math.l2_normalize(tf.cast(title_embedding, tf.float32), axis=-1)
    similarity = tf.matmul(title, tf.constant(memory.vectors), transpose_b=True)  # [B, M]
    nearest, index = tf.math.top_k(similarity, k=min(NEIGHBOURS, len(memory.weights)))
    weight = tf.exp((nearest - nearest[:, :1]) / SHARPNESS) * tf.gather(tf.constant(memory.weights), index)
    weight /= tf.reduce_sum(weight, axis=1, keepdims=True)
    batch = tf.shape(index)[0]
    rows = tf.broadcast_to(tf.range(batch)[:, tf.newaxis], tf.shape(index))
    shares = []
    for labels, size in zip(memory.labels, memory.sizes, strict=True):
        label = tf.gather(tf.constant(labels), index)
        segment = tf.where(label >= 0, rows * size + label, batch * size)  # unlabelled: a dummy segment
        summed = tf.math.unsorted_segment_sum(weight, segment, batch * size + 1)[:-1]
        shares.append(tf.reshape(summed, [batch, size]))
    return shares


def evidence_scores(inputs: Mapping[str, tf.Tensor], prior: PriorTables | None,
                    memory: ExemplarTables | None) -> dict[str, list[tf.Tensor]]:
    """Each evidence a model has (thresholds.EVIDENCE order), per level: the taxonomy prior of the
    full text and of the title (with category embeddings), the exemplar shares (with a memory)."""
    scores = {}
    if prior is not None:
        scores[TEXT_PRIOR] = taxonomy_priors(inputs[TEXT_EMBEDDING], prior)
        scores[TITLE_PRIOR] = taxonomy_priors(inputs[TITLE_EMBEDDING], prior)
    if memory is not None:
        scores[EXEMPLAR_SHARES] = exemplar_shares(inputs[TITLE_EMBEDDING], memory)
    return scores


def store_contributions(probabilities: list[tf.Tensor], layout: ContextLayout,
                        top_k: int = TOP_K) -> tf.Tensor:
    """float32[B, width]: a product's contribution to its store's context (linnet_core.store_context):
    per context level its probabilities with all but the `top_k` largest zeroed, levels side by side."""
    parts = []
    for probs, size in zip(probabilities, layout.sizes, strict=False):
        values, index = tf.math.top_k(probs, k=min(top_k, size))
        batch = tf.shape(probs)[0]
        rows = tf.broadcast_to(tf.range(batch)[:, tf.newaxis], tf.shape(index))
        parts.append(tf.scatter_nd(tf.stack([rows, index], axis=-1), values, tf.shape(probs)))
    return tf.concat(parts, axis=1)


def context_scores(context: tf.Tensor, layout: ContextLayout, sizes: tuple[int, ...]) -> list[tf.Tensor]:
    """The store context [B, width] as evidence: per level its slice [B, n_k], zeros below the context
    levels."""
    batch = tf.shape(context)[0]
    scores = []
    for k, size in enumerate(sizes):
        if k < len(layout.sizes):
            scores.append(context[:, layout.offsets[k]:layout.offsets[k] + size])
        else:
            scores.append(tf.zeros([batch, size], tf.float32))
    return scores


def fused_logits(logits: list[tf.Tensor], temperatures: tf.Tensor,
                 evidence: tuple[Evidence, ...] = ()) -> list[tf.Tensor]:
    """Per level L_k / T_k + Σ_e w_e,k · E_e,k (just L_k / T_k without evidence)."""
    fused = []
    for k, level_logits in enumerate(logits):
        scaled = tf.cast(level_logits, tf.float32) / temperatures[k]
        for scores, weights in evidence:
            scaled += weights[k] * scores[k]
        fused.append(scaled)
    return fused


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
    """`levels` or `temperatures` of a thresholds file, or the weights of an evidence, as float32[LEVELS]."""
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
