"""Temperature scaling recovers a known temperature and lowers NLL."""

from __future__ import annotations

import numpy as np
import pytest

from linnet_core import calibration


def _synthetic(temperature: float, n: int = 6000, classes: int = 12, seed: int = 0):
    """Logits z whose labels are drawn from softmax(z / temperature): the right T is known."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 4.0, size=(n, classes))
    scaled = logits / temperature
    probabilities = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    labels = (rng.random((n, 1)) > probabilities.cumsum(axis=1)).sum(axis=1)
    return logits, labels


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.5])
def test_fit_recovers_a_known_temperature(temperature):
    logits, labels = _synthetic(temperature)
    fitted = calibration.fit_temperature(logits, labels)
    assert fitted == pytest.approx(temperature, rel=0.08)
    assert calibration.nll(logits, labels, fitted) <= calibration.nll(logits, labels, temperature) + 1e-9


def test_fit_from_probabilities_and_unlabelled_rows():
    logits, labels = _synthetic(2.0)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = labels.copy()
    labels[::3] = -1
    fitted = calibration.fit_temperature(calibration.logits_from_probabilities(probabilities), labels)
    assert fitted == pytest.approx(2.0, rel=0.1)


def test_fit_temperatures_per_level_and_edges():
    over, over_labels = _synthetic(0.5, seed=1)
    under, under_labels = _synthetic(3.0, seed=2)
    labels = np.stack([over_labels, under_labels, np.full(len(over_labels), -1)], axis=1)
    fitted = calibration.fit_temperatures([over, under, under], labels)
    assert fitted[0] == pytest.approx(0.5, rel=0.08) and fitted[1] == pytest.approx(3.0, rel=0.08)
    assert fitted[2] == 1.0  # no labels at that level: leave it alone
    # Labels that the logits always rank first: confidence can only grow, T hits its lower bound.
    separable = np.eye(4)[np.arange(40) % 4] * 5.0
    assert calibration.fit_temperature(separable, np.arange(40) % 4) == calibration.T_MIN


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="logits"):
        calibration.fit_temperature(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="outside"):
        calibration.nll(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="heads"):
        calibration.fit_temperatures([np.zeros((2, 3))], np.zeros((2, 2)))


def test_lower_levels_are_fit_among_the_labels_siblings():
    """Level 2 has two families (parents 0 and 1) of three classes; labels follow softmax(z / 2)
    within the true parent's family, while the other family's logits are large noise that an
    all-classes fit would wrongly try to explain."""
    rng = np.random.default_rng(5)
    n = 6000
    parent = rng.integers(0, 2, n)
    parents = [np.array([-1, -1]), np.array([0, 0, 0, 1, 1, 1])]
    logits_2 = rng.normal(0.0, 4.0, size=(n, 6))
    family = parents[1][None, :] == parent[:, None]
    logits_2[~family] += 8.0
    scaled = np.where(family, logits_2 / 2.0, -np.inf)
    probabilities = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    child = (rng.random((n, 1)) > probabilities.cumsum(axis=1)).sum(axis=1)
    labels = np.stack([parent, child], axis=1)
    logits_1 = np.where(np.arange(2)[None, :] == parent[:, None], 3.0, 0.0)
    by_family = calibration.fit_temperatures([logits_1, logits_2], labels, parents)
    assert by_family[1] == pytest.approx(2.0, rel=0.08)
    assert calibration.fit_temperatures([logits_1, logits_2], labels)[1] > 3.0
    too_few = calibration.fit_temperatures([logits_1[:40], logits_2[:40]], labels[:40], parents)
    assert too_few == (1.0, 1.0)
    with pytest.raises(ValueError, match="allowed"):
        calibration.fit_temperature(logits_2, child, allowed=~family)


def _fused_synthetic(temperature: float, weight: float, n: int = 6000, classes: int = 12, seed: int = 0,
                     allowed: np.ndarray | None = None):
    """Logits z and priors p (cosines in [-1, 1]) whose labels are drawn from softmax(z / T + λ p)
    over the allowed classes: the right (T, λ) are known."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, size=(n, classes))
    priors = rng.uniform(-1.0, 1.0, size=(n, classes))
    scores = logits / temperature + weight * priors
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf)
    probabilities = np.exp(scores - scores.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    labels = (rng.random((n, 1)) > probabilities.cumsum(axis=1)).sum(axis=1)
    return logits, priors, labels


@pytest.mark.parametrize("temperature, weight", [(1.0, 0.0), (2.0, 3.0), (0.7, 8.0)])
def test_joint_fit_recovers_known_temperature_and_prior_weight(temperature, weight):
    logits, priors, labels = _fused_synthetic(temperature, weight)
    fitted_t, fitted_w = calibration.fit_temperature_and_prior(logits, priors, labels)
    assert fitted_t == pytest.approx(temperature, rel=0.1)
    assert fitted_w == pytest.approx(weight, abs=0.1 + 0.1 * weight)
    # With zero priors the joint fit is temperature scaling.
    only_t, zero_w = calibration.fit_temperature_and_prior(logits, np.zeros_like(priors), labels)
    assert zero_w == 0.0 and only_t == pytest.approx(calibration.fit_temperature(logits, labels), rel=1e-3)


def test_joint_fit_keeps_the_weight_non_negative_and_checks_shapes():
    logits, priors, labels = _fused_synthetic(1.5, 2.0, seed=3)
    _, weight = calibration.fit_temperature_and_prior(logits, -priors, labels)  # a prior that misleads
    assert weight == 0.0
    assert calibration.fit_temperature_and_prior(logits[:10], priors[:10], labels[:10], min_examples=50) == (
        1.0, 0.0)
    with pytest.raises(ValueError, match="priors"):
        calibration.fit_temperature_and_prior(logits, priors[:, :3], labels)


def test_joint_fit_of_lower_levels_is_among_the_labels_siblings():
    """As for temperatures: level 2's labels follow the fused softmax within the true parent's family,
    and the other family carries large logits and priors that only an all-classes fit would see."""
    rng = np.random.default_rng(7)
    n = 6000
    parent = rng.integers(0, 2, n)
    parents = [np.array([-1, -1]), np.array([0, 0, 0, 1, 1, 1])]
    family = parents[1][None, :] == parent[:, None]
    logits_2, priors_2, child = _fused_synthetic(2.0, 4.0, n=n, classes=6, seed=8, allowed=family)
    logits_2 = np.where(family, logits_2, logits_2 + 8.0)
    priors_2 = np.where(family, priors_2, 1.0)
    labels = np.stack([parent, child], axis=1)
    logits_1 = np.where(np.arange(2)[None, :] == parent[:, None], 3.0, 0.0)
    temperatures, weights = calibration.fit_temperatures_and_priors(
        [logits_1, logits_2], [np.zeros_like(logits_1), priors_2], labels, parents)
    assert temperatures[1] == pytest.approx(2.0, rel=0.1) and weights[1] == pytest.approx(4.0, rel=0.15)
    assert weights[0] == 0.0
    with pytest.raises(ValueError, match="priors"):
        calibration.fit_temperatures_and_priors([logits_1, logits_2], [priors_2], labels, parents)
