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
