"""Fusion calibration recovers known temperatures and evidence weights and lowers NLL."""

from __future__ import annotations

import numpy as np
import pytest

from linnet_core.calibration import fusion


def _draw(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One label per row drawn from softmax(scores) (-inf scores are never drawn)."""
    probabilities = np.exp(scores - scores.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return (rng.random((len(scores), 1)) > probabilities.cumsum(axis=1)).sum(axis=1)


def _synthetic(temperature: float, weights: tuple[float, ...] = (), n: int = 6000, classes: int = 12,
               seed: int = 0, allowed: np.ndarray | None = None):
    """Logits z and evidence e_i (cosines in [-1, 1]) whose labels are drawn from
    softmax(z / T + Σ w_i e_i) over the allowed classes: the right (T, w) are known."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, size=(n, classes))
    evidence = [rng.uniform(-1.0, 1.0, size=(n, classes)) for _ in weights]
    scores = logits / temperature + sum((w * e for w, e in zip(weights, evidence, strict=True)),
                                        np.zeros_like(logits))
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf)
    return logits, evidence, _draw(scores, rng)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.5])
def test_without_evidence_the_fit_is_temperature_scaling(temperature):
    logits, _, labels = _synthetic(temperature)
    fitted, weights = fusion.fit_fusion(logits, [], labels)
    assert fitted == pytest.approx(temperature, rel=0.08) and weights == ()
    assert fusion.nll(logits, labels, fitted) <= fusion.nll(logits, labels, temperature) + 1e-9


@pytest.mark.parametrize("temperature, weights", [(1.0, (0.0, 0.0)), (2.0, (3.0, 0.0)), (0.7, (8.0, 2.0))])
def test_joint_fit_recovers_known_temperature_and_evidence_weights(temperature, weights):
    logits, evidence, labels = _synthetic(temperature, weights)
    fitted_t, fitted_w = fusion.fit_fusion(logits, evidence, labels)
    assert fitted_t == pytest.approx(temperature, rel=0.1)
    for fitted, true in zip(fitted_w, weights, strict=True):
        assert fitted == pytest.approx(true, abs=0.15 + 0.1 * true)


def test_unlabelled_rows_are_ignored_and_useless_logits_get_a_high_temperature():
    """Labels drawn from the evidence alone: the network's logits deserve (almost) no weight."""
    rng = np.random.default_rng(4)
    logits, (evidence,), _ = _synthetic(1.0, (1.0,), seed=4)
    labels = _draw(6.0 * evidence, rng)
    labels[::3] = -1
    temperature, (weight,) = fusion.fit_fusion(logits, [evidence], labels)
    assert temperature > 20.0 and weight == pytest.approx(6.0, rel=0.1)


def test_weights_stay_non_negative_and_bad_inputs_are_rejected():
    logits, (evidence,), labels = _synthetic(1.5, (2.0,), seed=3)
    _, (weight,) = fusion.fit_fusion(logits, [-evidence], labels)  # evidence that misleads
    assert weight == 0.0
    assert fusion.fit_fusion(logits[:10], [evidence[:10]], labels[:10], min_examples=50) is None
    with pytest.raises(ValueError, match="evidence"):
        fusion.fit_fusion(logits, [evidence[:, :3]], labels)
    with pytest.raises(ValueError, match="logits"):
        fusion.fit_fusion(np.zeros(3), [], np.zeros(3))
    with pytest.raises(ValueError, match="outside"):
        fusion.nll(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="heads"):
        fusion.fit_fusions([np.zeros((2, 3))], [], np.zeros((2, 2)))
    # Labels that the logits always rank first: confidence can only grow, T heads for its lower bound.
    separable = np.eye(4)[np.arange(40) % 4] * 5.0
    sharpened, _ = fusion.fit_fusion(separable, [], np.arange(40) % 4)
    assert fusion.T_MIN <= sharpened < 0.25


def test_lower_levels_are_fit_among_the_labels_siblings():
    """Level 2 has two families (parents 0 and 1) of three classes; its labels follow the fused softmax
    within the true parent's family, while the other family carries large logits and evidence that
    only an all-classes fit would try to explain."""
    rng = np.random.default_rng(7)
    n = 6000
    parent = rng.integers(0, 2, n)
    parents = [np.array([-1, -1]), np.array([0, 0, 0, 1, 1, 1])]
    family = parents[1][None, :] == parent[:, None]
    logits_2, (evidence_2,), child = _synthetic(2.0, (4.0,), n=n, classes=6, seed=8, allowed=family)
    logits_2 = np.where(family, logits_2, logits_2 + 8.0)
    evidence_2 = np.where(family, evidence_2, 1.0)
    labels = np.stack([parent, child], axis=1)
    logits_1 = np.where(np.arange(2)[None, :] == parent[:, None], 3.0, 0.0)
    temperatures, (weights,) = fusion.fit_fusions(
        [logits_1, logits_2], [[np.zeros_like(logits_1), evidence_2]], labels, parents)
    assert temperatures[1] == pytest.approx(2.0, rel=0.1) and weights[1] == pytest.approx(4.0, rel=0.15)
    assert weights[0] == 0.0
    all_classes, _ = fusion.fit_fusions([logits_1, logits_2], [], labels)
    assert all_classes[1] > 3.0


def test_a_level_with_too_few_labels_takes_the_fit_of_the_level_above():
    logits, (evidence,), labels = _synthetic(2.0, (3.0,), seed=9)
    level_labels = np.stack([labels, np.where(np.arange(len(labels)) < 10, labels, -1)], axis=1)
    temperatures, (weights,) = fusion.fit_fusions([logits, logits], [[evidence, evidence]], level_labels)
    assert temperatures[1] == temperatures[0] and weights[1] == weights[0]
    nothing = np.full_like(level_labels, -1)
    assert fusion.fit_fusions([logits, logits], [[evidence, evidence]], nothing) == ((1.0, 1.0),
                                                                                        ((0.0, 0.0),))
