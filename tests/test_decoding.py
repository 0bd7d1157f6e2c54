"""Constrained decoding and thresholds (linnet_core.model.decoding) on hand-made logits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from linnet_core.decisions import ABSTAINED, BACKED_OFF, LEAF
from linnet_core.model import decoding, evidence
from linnet_core.model.decoding import DecodingTables
from linnet_core.taxonomy import Taxonomy, TaxonomyError

# Tiny taxonomy classes. Level 1: [Animals 1, Toys 10]; level 2: [Pets 2, Farm 5, Dolls 11,
# Puzzles 12]; level 3: [Dogs 3, Cats 4, Jigsaw 13]. Logits are logs of unnormalised scores, so
# the child-renormalised probabilities are ratios of the scores within each sibling group.
SCORES = ([0.6, 0.4], [0.55, 0.45, 0.9, 0.1], [0.6, 0.4, 1.0])


def _logits(scores=SCORES) -> list[tf.Tensor]:
    return [tf.constant(np.log([level]), tf.float32) for level in scores]


def _decode(tables: DecodingTables, mode: str, levels=(0.0,) * 7, use_overrides: bool = True,
            temperatures=(1.0,) * 7, scores=SCORES) -> dict[str, np.ndarray]:
    outputs = decoding.decode(_logits(scores), tables, tf.constant(temperatures, tf.float32),
                              tf.constant(mode), tf.constant(levels, tf.float32), tf.constant(use_overrides))
    return {name: value.numpy()[0] for name, value in outputs.items()}


def test_greedy_and_exact_disagree_on_hand_made_logits(tiny: Taxonomy) -> None:
    tables = DecodingTables.build(tiny)
    greedy = _decode(tables, "greedy")
    exact = _decode(tables, "exact")
    # Greedy: Animals (0.6) > Pets (0.55) > Dogs (0.6): path probability 0.198.
    assert greedy["level_ids"].tolist() == [1, 2, 3, -1, -1, -1, -1]
    np.testing.assert_allclose(greedy["level_confidences"][:3], [0.6, 0.33, 0.198], rtol=1e-5)
    # Exact: the best leaf is Toys > Dolls (0.4 * 0.9 = 0.36), better than Farm (0.27) and Dogs.
    assert exact["level_ids"].tolist() == [10, 11, -1, -1, -1, -1, -1]
    np.testing.assert_allclose(exact["level_confidences"][:2], [0.4, 0.36], rtol=1e-5)
    assert exact["level_confidences"][2:].tolist() == [0.0] * 5
    for result, mode, leaf, depth in ((greedy, b"greedy", 3, 3), (exact, b"exact", 11, 2)):
        assert (result["gpt_id"], result["depth"], result["decision"]) == (leaf, depth, LEAF)
        assert result["decoding"] == mode


def _path_probability(taxonomy: Taxonomy, scores: list[np.ndarray], leaf_id: int) -> float:
    """Product down the path of each node's score over its siblings' scores, the slow way."""
    probability = 1.0
    for node in taxonomy.ancestors(leaf_id, include_self=True):
        level = scores[node.depth - 1]
        siblings = [taxonomy.level_index(s) for s in taxonomy.level_ids(node.depth)
                    if taxonomy.node(s).parent == node.parent]
        probability *= level[taxonomy.level_index(node.id)] / sum(level[i] for i in siblings)
    return probability


def test_exact_matches_brute_force_over_leaves(tiny: Taxonomy) -> None:
    tables = DecodingTables.build(tiny)
    rng = np.random.default_rng(3)
    for _ in range(20):
        scores = [rng.random(size) + 0.01 for size in tiny.level_sizes()]
        best = max(tiny.leaves, key=lambda leaf, s=scores: _path_probability(tiny, s, leaf.id))
        result = _decode(tables, "exact", scores=[list(level) for level in scores])
        assert result["level_ids"][result["level_ids"] >= 0][-1] == best.id
        expected = _path_probability(tiny, scores, best.id)
        assert result["level_confidences"][best.depth - 1] == pytest.approx(expected, rel=1e-4)


def test_thresholds_cut_before_first_failing_node(tiny: Taxonomy) -> None:
    tables = DecodingTables.build(tiny)
    assert _decode(tables, "greedy", levels=(0.5, 0.3, 0.1))["gpt_id"] == 3
    # Pets (0.33) fails 0.4: the path stops at Animals although Dogs (0.198) clears its own 0.1.
    cut = _decode(tables, "greedy", levels=(0.5, 0.4, 0.1))
    assert (cut["gpt_id"], cut["depth"], cut["decision"]) == (1, 1, BACKED_OFF)
    assert cut["level_ids"].tolist()[:3] == [1, 2, 3]
    none = _decode(tables, "exact", levels=(0.5, 0.0, 0.0))
    assert (none["gpt_id"], none["depth"], none["decision"]) == (-1, 0, ABSTAINED)
    # A threshold equal to the confidence clears it (Dolls is a leaf, so level 3's 1.0 is unused).
    first, second = _decode(tables, "exact")["level_confidences"][:2]
    assert _decode(tables, "exact", levels=(first, second, 1.0))["decision"] == LEAF


def test_overrides_apply_to_whole_subtrees(tiny: Taxonomy) -> None:
    tables = DecodingTables.build(tiny, {1: 0.2, 12: 0.7, 13: 0.5})
    np.testing.assert_allclose(tables.floors[2], [0.2, 0.2, 0.7])
    # The floor on Animals reaches Dogs (0.198 < 0.2) but not Pets (0.33).
    cut = _decode(tables, "greedy")
    assert (cut["gpt_id"], cut["depth"], cut["decision"]) == (2, 2, BACKED_OFF)
    assert _decode(tables, "greedy", use_overrides=False)["gpt_id"] == 3
    # A floor on a node raises its own threshold too, and floors elsewhere leave other paths alone.
    assert _decode(DecodingTables.build(tiny, {2: 0.35}), "greedy")["gpt_id"] == 1
    assert _decode(tables, "exact")["gpt_id"] == 11
    # The level threshold still wins where it is higher than the floor.
    assert _decode(tables, "greedy", levels=(0.7, 0.0, 0.0))["decision"] == ABSTAINED


def test_override_on_unknown_node_is_refused(tiny: Taxonomy) -> None:
    with pytest.raises(TaxonomyError, match="999"):
        DecodingTables.build(tiny, {999: 0.5})


def test_temperatures_scale_logits_before_softmax(tiny: Taxonomy) -> None:
    tables = DecodingTables.build(tiny)
    result = _decode(tables, "greedy", temperatures=(1.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0))
    pets = math.sqrt(0.55) / (math.sqrt(0.55) + math.sqrt(0.45))
    assert result["level_confidences"][1] == pytest.approx(0.6 * pets, rel=1e-5)
    probabilities = decoding.level_probabilities(_logits(), tf.constant([1.0, 2.0, 1.0]))
    np.testing.assert_allclose(probabilities[1].numpy().sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(probabilities[0].numpy(), [[0.6, 0.4]], rtol=1e-5)


def test_unknown_decoding_mode_fails(tiny: Taxonomy) -> None:
    with pytest.raises(tf.errors.InvalidArgumentError, match="decoding must be"):
        _decode(DecodingTables.build(tiny), "beam")


@pytest.fixture(scope="module")
def gpt_tables(gpt: Taxonomy) -> DecodingTables:
    return DecodingTables.build(gpt)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), scale=st.floats(0.1, 20.0))
def test_every_decoded_path_is_valid_in_the_real_taxonomy(gpt: Taxonomy, gpt_tables: DecodingTables,
                                                          seed: int, scale: float) -> None:
    rng = np.random.default_rng(seed)
    logits = [tf.constant(rng.normal(scale=scale, size=(4, size)), tf.float32) for size in gpt.level_sizes()]
    ends = {}
    for mode in decoding.MODES:
        levels = tf.constant(rng.uniform(0.0, 0.3, size=7), tf.float32)
        result = {name: value.numpy() for name, value in decoding.decode(
            logits, gpt_tables, tf.ones(7), tf.constant(mode), levels, tf.constant(True)).items()}
        for row, depth, gpt_id in zip(result["level_ids"], result["depth"], result["gpt_id"], strict=True):
            path = [int(i) for i in row if i >= 0]
            assert row.tolist() == path + [-1] * (7 - len(path))
            assert [n.id for n in gpt.ancestors(path[-1], include_self=True)] == path
            assert gpt.node(path[-1]).is_leaf
            assert gpt_id == (path[depth - 1] if depth else -1)
        ends[mode] = result["level_confidences"][np.arange(4), (result["level_ids"] >= 0).sum(axis=1) - 1]
    # Exact decoding finds the most probable leaf path, so it never scores below greedy's.
    assert np.all(ends["exact"] >= ends["greedy"] * (1 - 1e-4))


# -- the taxonomy prior ----------------------------------------------------------------------------
# Hand-made 2-D node vectors (cos θ, sin θ): against the text embedding (1, 0) the cosine of a node is
# its first coordinate. Subtree maxima by hand: Animals max(.1, .2, .9, .3, .5) = .9, Toys
# max(0, .4, -.2, .6) = .6; Pets max(.2, .9, .3) = .9, Farm .5, Dolls .4, Puzzles max(-.2, .6) = .6;
# Dogs .9, Cats .3, Jigsaw .6.
NODE_COSINES = {1: 0.1, 2: 0.2, 3: 0.9, 4: 0.3, 5: 0.5, 10: 0.0, 11: 0.4, 12: -0.2, 13: 0.6}
EXPECTED_PRIORS = ([0.9, 0.6], [0.9, 0.5, 0.4, 0.6], [0.9, 0.3, 0.6])


def _prior_tables(taxonomy: Taxonomy) -> evidence.PriorTables:
    from linnet_core.category_prior import CategoryEmbeddings, node_ids

    ids = node_ids(taxonomy)
    cosines = np.array([NODE_COSINES[i] for i in ids])
    vectors = np.stack([cosines, np.sqrt(1.0 - cosines**2)], axis=1).astype(np.float32)
    embeddings = CategoryEmbeddings(np.array(ids), vectors, "hand", taxonomy.fingerprint)
    return evidence.PriorTables.build(taxonomy, embeddings)


def test_taxonomy_prior_is_the_subtree_max_of_cosines_by_hand(tiny: Taxonomy) -> None:
    tables = _prior_tables(tiny)
    # Row 2 is row 1 scaled: the prior uses cosines, so the embedding's length does not matter.
    priors = evidence.taxonomy_priors(tf.constant([[1.0, 0.0], [3.0, 0.0]]), tables)
    for level, expected in zip(priors, EXPECTED_PRIORS, strict=True):
        np.testing.assert_allclose(level.numpy(), [expected, expected], atol=1e-6)


def test_prior_embeddings_of_another_taxonomy_are_refused(tiny: Taxonomy, gpt: Taxonomy) -> None:
    from linnet_core.category_prior import CategoryEmbeddings, CategoryEmbeddingsError

    embeddings = CategoryEmbeddings(np.arange(3), np.eye(3, dtype=np.float32), "hand", tiny.fingerprint)
    with pytest.raises(CategoryEmbeddingsError):
        evidence.PriorTables.build(tiny, embeddings)


def test_fused_logits_weigh_the_prior_after_temperatures(tiny: Taxonomy) -> None:
    tables = _prior_tables(tiny)
    priors = evidence.taxonomy_priors(tf.constant([[1.0, 0.0]]), tables)
    temperatures = tf.constant([2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    weights = tf.constant([5.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    probabilities = decoding.level_probabilities(_logits(), temperatures, ((priors, weights),))
    level_1 = np.log(SCORES[0]) / 2.0 + 5.0 * np.array(EXPECTED_PRIORS[0])
    np.testing.assert_allclose(probabilities[0].numpy()[0], np.exp(level_1) / np.exp(level_1).sum(),
                               rtol=1e-5)
    np.testing.assert_allclose(probabilities[1].numpy()[0], np.array(SCORES[1]) / sum(SCORES[1]), rtol=1e-5)
    # Level 1 fused: Animals 0.6^(1/2)·e^4.5 vs Toys 0.4^(1/2)·e^3 → Animals 0.846. Level 3 among
    # Pets' children: Dogs 0.6·e^0.9 vs Cats 0.4·e^0.3 → Dogs 0.732. Leaves: Animals > Farm
    # 0.846·0.45 = 0.381 beats Animals > Pets > Dogs 0.846·0.55·0.732 = 0.341 and Toys > Dolls
    # 0.154·0.9 = 0.139: the prior moved the exact answer from Toys > Dolls to Animals > Farm.
    outputs = decoding.decode(_logits(), DecodingTables.build(tiny), temperatures, tf.constant("exact"),
                              tf.zeros([7]), tf.constant(True), ((priors, weights),))
    animals_score, toys_score = math.sqrt(0.6) * math.exp(4.5), math.sqrt(0.4) * math.exp(3.0)
    animals = animals_score / (animals_score + toys_score)
    assert outputs["level_ids"].numpy()[0, :2].tolist() == [1, 5]
    np.testing.assert_allclose(outputs["level_confidences"].numpy()[0, :2], [animals, animals * 0.45],
                               rtol=1e-5)
    # Zero weights are plain temperature scaling; two evidence terms add.
    plain = decoding.level_probabilities(_logits(), temperatures)
    zero = decoding.level_probabilities(_logits(), temperatures, ((priors, tf.zeros([7])),))
    for a, b in zip(plain, zero, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    halves = decoding.level_probabilities(_logits(), temperatures,
                                          ((priors, weights / 2), (priors, weights / 2)))
    for a, b in zip(probabilities, halves, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5)


def test_exemplar_shares_by_hand(tiny: Taxonomy) -> None:
    """Three exemplars: Dogs at cos 1, Farm at cos 0.8 with store factor 0.5, Toys > Dolls at cos 0.
    Weights exp((cos − 1) / SHARPNESS) × factor: 1, 0.5·e^-4, e^-20; shares are their normalised sums
    per class, and a level an exemplar's label does not reach gets nothing from it."""
    from linnet_core.exemplars import SHARPNESS, Exemplars

    vectors = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]], np.float32)
    labels = np.array([[0, 0, 0], [0, 1, -1], [1, 2, -1]], np.int32)  # class indexes per level
    memory = evidence.ExemplarTables.build(
        tiny, Exemplars(vectors, labels, np.array([1.0, 0.5, 1.0], np.float32), tiny.fingerprint))
    shares = evidence.exemplar_shares(tf.constant([[2.0, 0.0]]), memory)
    dogs, farm, dolls = 1.0, 0.5 * math.exp(-0.2 / SHARPNESS), math.exp(-1.0 / SHARPNESS)
    total = dogs + farm + dolls
    np.testing.assert_allclose(shares[0].numpy()[0], [(dogs + farm) / total, dolls / total], rtol=1e-5)
    np.testing.assert_allclose(shares[1].numpy()[0], [dogs / total, farm / total, dolls / total, 0.0],
                               rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(shares[2].numpy()[0], [dogs / total, 0.0, 0.0], rtol=1e-5, atol=1e-12)
    empty = evidence.exemplar_shares(tf.zeros([0, 2]), memory)
    assert [level.shape.as_list() for level in empty] == [[0, 2], [0, 4], [0, 3]]


def test_exemplars_of_another_taxonomy_or_malformed_are_refused(tiny: Taxonomy, gpt: Taxonomy) -> None:
    from linnet_core.exemplars import Exemplars, ExemplarsError

    memory = Exemplars(np.eye(2, dtype=np.float32), np.zeros((2, 3), np.int32), np.ones(2, np.float32),
                       tiny.fingerprint)
    with pytest.raises(ExemplarsError):
        evidence.ExemplarTables.build(gpt, memory)
    with pytest.raises(ExemplarsError, match="disagree"):
        Exemplars(np.eye(2, dtype=np.float32), np.zeros((3, 3), np.int32), np.ones(2, np.float32), "x")
    with pytest.raises(ExemplarsError, match="weights"):
        Exemplars(np.eye(2, dtype=np.float32), np.zeros((2, 3), np.int32), np.zeros(2, np.float32), "x")
