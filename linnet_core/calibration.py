"""Per-level temperature scaling: one scalar T per head, fit on the calibration split by minimising NLL.

Dividing logits by T keeps every argmax (so decoding is unchanged) and only makes confidences honest,
which the precision-target thresholds rely on. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

T_MIN, T_MAX = 0.05, 20.0
_TINY = 1e-30


def _softmax(scaled: np.ndarray) -> np.ndarray:
    shifted = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def logits_from_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """Log-probabilities, which are logits up to a per-row constant (softmax ignores it)."""
    return np.log(np.maximum(np.asarray(probabilities, dtype=np.float64), _TINY))


def _labelled(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"need logits [N, C] and labels [N], got {logits.shape} and {labels.shape}")
    keep = labels >= 0
    if np.any(labels[keep] >= logits.shape[1]):
        raise ValueError(f"label index {int(labels.max())} outside {logits.shape[1]} classes")
    return logits[keep], labels[keep]


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labelled rows (label ≥ 0) under softmax(logits / T)."""
    logits, labels = _labelled(logits, labels)
    scaled = logits / temperature
    top = scaled.max(axis=1)
    log_norm = top + np.log(np.exp(scaled - top[:, None]).sum(axis=1))
    return float(np.mean(log_norm - scaled[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, iterations: int = 60) -> float:
    """The T in [T_MIN, T_MAX] minimising NLL over the labelled rows (1.0 when there are none).

    NLL is convex in β = 1/T with derivative E_softmax(βz)[z] − z_label, so bisection on the sign of
    the derivative (in log β) finds the minimum without step sizes to tune.
    """
    logits, labels = _labelled(logits, labels)
    if not len(labels):
        return 1.0
    target = logits[np.arange(len(labels)), labels].mean()

    def slope(beta: float) -> float:
        return float((_softmax(beta * logits) * logits).sum(axis=1).mean() - target)

    low, high = np.log(1.0 / T_MAX), np.log(1.0 / T_MIN)
    if slope(np.exp(low)) >= 0:
        return T_MAX
    if slope(np.exp(high)) <= 0:
        return T_MIN
    for _ in range(iterations):
        middle = (low + high) / 2.0
        if slope(np.exp(middle)) < 0:
            low = middle
        else:
            high = middle
    return float(1.0 / np.exp((low + high) / 2.0))


def fit_temperatures(level_logits: Sequence[np.ndarray], level_labels: np.ndarray) -> tuple[float, ...]:
    """One temperature per level head.

    Args:
        level_logits: per level, float[N, C_k] logits (or log-probabilities) of that head.
        level_labels: int[N, L] class index of the label's ancestor per level, -1 where none.
    """
    level_labels = np.asarray(level_labels, dtype=np.int64)
    if level_labels.shape[1] != len(level_logits):
        raise ValueError(f"{len(level_logits)} heads but labels for {level_labels.shape[1]} levels")
    return tuple(fit_temperature(logits, level_labels[:, k]) for k, logits in enumerate(level_logits))
