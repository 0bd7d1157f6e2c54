"""The evidence fused into the network's logits, as TensorFlow ops: L'_k = L_k / T_k + Σ_e w_e,k · E_e,k.

Each E_e,k holds one score per level-k class (names: `calibration.thresholds.EVIDENCE`): the taxonomy
prior of the full text and of the title (per class, the highest cosine between the product's embedding
and the path embedding of any node in the class's subtree, `linnet_core.category_prior`), the exemplar
shares (`linnet_core.exemplars`) and the store context (`linnet_core.store_context`, from the first
pass's `store_contributions`). The inference model, cross-fitting and decoding share these ops.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from linnet_core.calibration.thresholds import EXEMPLAR_SHARES, TEXT_PRIOR, TITLE_PRIOR
from linnet_core.category_prior import CategoryEmbeddings, level_segments
from linnet_core.exemplars import NEIGHBOURS, SHARPNESS, Exemplars
from linnet_core.features import TEXT_EMBEDDING, TITLE_EMBEDDING
from linnet_core.store_context import TOP_K, ContextLayout
from linnet_core.taxonomy import Taxonomy


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
