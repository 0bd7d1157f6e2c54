"""Per-level temperature scaling: one scalar T per head, fit on the calibration split by minimising NLL.

Dividing logits by T keeps every argmax within a level and makes confidences honest, which the
precision-target thresholds rely on. Confidences are path probabilities, products of each node's
probability renormalised over its siblings, so level k > 1 is fit on exactly those factors: the NLL
of the label among the children of the label's parent (`allowed`). Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

T_MIN, T_MAX = 0.05, 20.0
MIN_EXAMPLES = 50  # fewer labelled examples at a level leave its temperature at 1.0
_TINY = 1e-30
_MASKED = -1e30


def _softmax(scaled: np.ndarray) -> np.ndarray:
    shifted = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def logits_from_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """Log-probabilities, which are logits up to a per-row constant (softmax ignores it)."""
    return np.log(np.maximum(np.asarray(probabilities, dtype=np.float64), _TINY))


def _labelled(logits: np.ndarray, labels: np.ndarray,
              allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits, labels, allowed) of the labelled rows; logits outside `allowed` pushed to -1e30."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"need logits [N, C] and labels [N], got {logits.shape} and {labels.shape}")
    allowed = np.ones(logits.shape, bool) if allowed is None else np.asarray(allowed, bool)
    if allowed.shape != logits.shape:
        raise ValueError(f"allowed {allowed.shape} must match logits {logits.shape}")
    keep = labels >= 0
    if np.any(labels[keep] >= logits.shape[1]):
        raise ValueError(f"label index {int(labels.max())} outside {logits.shape[1]} classes")
    logits, labels, allowed = logits[keep], labels[keep], allowed[keep]
    if not allowed[np.arange(len(labels)), labels].all():
        raise ValueError("a label outside its allowed classes")
    return np.where(allowed, logits, _MASKED), labels, allowed


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0,
        allowed: np.ndarray | None = None) -> float:
    """Mean negative log-likelihood of the labelled rows (label ≥ 0) under softmax(logits / T) over
    the `allowed` classes of each row (all when None)."""
    logits, labels, _ = _labelled(logits, labels, allowed)
    scaled = logits / temperature
    top = scaled.max(axis=1)
    log_norm = top + np.log(np.exp(scaled - top[:, None]).sum(axis=1))
    return float(np.mean(log_norm - scaled[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, allowed: np.ndarray | None = None,
                    iterations: int = 60, min_examples: int = 1) -> float:
    """The T in [T_MIN, T_MAX] minimising NLL over the labelled rows (1.0 with < min_examples rows).

    NLL is convex in β = 1/T with derivative E_softmax(βz)[z] − z_label, so bisection on the sign of
    the derivative (in log β) finds the minimum without step sizes to tune.
    """
    logits, labels, allowed = _labelled(logits, labels, allowed)
    if len(labels) < max(min_examples, 1):
        return 1.0
    target = logits[np.arange(len(labels)), labels].mean()
    finite = np.where(allowed, logits, 0.0)

    def slope(beta: float) -> float:
        return float((_softmax(beta * logits) * finite).sum(axis=1).mean() - target)

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


def _siblings_of_label(level_labels: np.ndarray, parents: Sequence[np.ndarray] | None,
                       k: int) -> np.ndarray | None:
    """bool[N, C_k]: the classes sharing the label's parent (None: level 1, or no parents given)."""
    if parents is None or k == 0:
        return None
    parent_of_label = np.where(level_labels[:, k] >= 0, level_labels[:, k - 1], -2)
    return np.asarray(parents[k])[None, :] == parent_of_label[:, None]


def fit_temperatures(level_logits: Sequence[np.ndarray], level_labels: np.ndarray,
                     parents: Sequence[np.ndarray] | None = None,
                     min_examples: int = MIN_EXAMPLES) -> tuple[float, ...]:
    """One temperature per level head.

    Args:
        level_logits: per level, float[N, C_k] logits (or log-probabilities) of that head.
        level_labels: int[N, L] class index of the label's ancestor per level, -1 where none.
        parents: per level, int[C_k] class index of each class's parent at level k-1 (level 1: any).
            Given, level k > 1 is fit among the label's siblings only (the factors of path
            confidence); None fits every level over all its classes.
        min_examples: levels with fewer labelled rows keep T = 1.0 (too little evidence).
    """
    level_labels = np.asarray(level_labels, dtype=np.int64)
    if level_labels.shape[1] != len(level_logits):
        raise ValueError(f"{len(level_logits)} heads but labels for {level_labels.shape[1]} levels")
    temperatures = []
    for k, logits in enumerate(level_logits):
        allowed = _siblings_of_label(level_labels, parents, k)
        temperatures.append(fit_temperature(logits, level_labels[:, k], allowed, min_examples=min_examples))
    return tuple(temperatures)


# -- temperatures fitted jointly with the weight of the taxonomy prior ----------------------------------
PRIOR_WEIGHT_MAX = 1000.0  # e5 cosines span a narrow band (~0.7–0.9): λ of 100–200 is typical


def _fused_nll_and_derivatives(features: np.ndarray, allowed: np.ndarray, labels: np.ndarray,
                               theta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean NLL of softmax(θ · f) over allowed classes, its gradient and Hessian in θ.

    features: [N, C, 2] per class (logit, prior). The NLL is convex in θ (a log-sum-exp of linear
    functions minus a linear one): gradient E_p[f] − f_label, Hessian E_p[f fᵀ] − E_p[f] E_p[f]ᵀ.
    """
    scores = np.where(allowed, features @ theta, -np.inf)
    top = scores.max(axis=1, keepdims=True)
    weights = np.exp(scores - top)
    norm = weights.sum(axis=1, keepdims=True)
    probabilities = weights / norm
    rows = np.arange(len(labels))
    value = float(np.mean(top[:, 0] + np.log(norm[:, 0]) - scores[rows, labels]))
    mean = np.einsum("nc,nci->ni", probabilities, features)
    gradient = (mean - features[rows, labels]).mean(axis=0)
    second = np.einsum("nc,nci,ncj->nij", probabilities, features, features)
    hessian = (second - mean[:, :, None] * mean[:, None, :]).mean(axis=0)
    return value, gradient, hessian


def fit_temperature_and_prior(logits: np.ndarray, priors: np.ndarray, labels: np.ndarray,
                              allowed: np.ndarray | None = None, iterations: int = 50,
                              min_examples: int = 1) -> tuple[float, float]:
    """(T, λ) minimising the NLL of softmax(logits / T + λ · priors) over the `allowed` classes of the
    labelled rows, T in [T_MIN, T_MAX] and λ in [0, PRIOR_WEIGHT_MAX]; (1.0, 0.0) with < min_examples.

    In θ = (1/T, λ) the NLL is convex, so a projected, damped Newton step from (1, 0) finds the
    minimum in a few iterations without step sizes to tune.
    """
    priors = np.asarray(priors, dtype=np.float64)
    if priors.shape != np.shape(logits):
        raise ValueError(f"priors {priors.shape} must match logits {np.shape(logits)}")
    keep = np.asarray(labels) >= 0
    logits, labels, allowed = _labelled(logits, labels, allowed)
    if len(labels) < max(min_examples, 1):
        return 1.0, 0.0
    features = np.stack([np.where(allowed, logits, 0.0), np.where(allowed, priors[keep], 0.0)], axis=-1)
    low, high = np.array([1.0 / T_MAX, 0.0]), np.array([1.0 / T_MIN, PRIOR_WEIGHT_MAX])
    theta = np.array([1.0, 0.0])
    value, gradient, hessian = _fused_nll_and_derivatives(features, allowed, labels, theta)
    for _ in range(iterations):
        step = np.linalg.solve(hessian + 1e-9 * np.eye(2), gradient)
        scale = 1.0
        while scale > 1e-6:
            trial = np.clip(theta - scale * step, low, high)
            trial_value, trial_gradient, trial_hessian = _fused_nll_and_derivatives(
                features, allowed, labels, trial)
            if trial_value <= value:
                break
            scale /= 2.0
        else:
            break
        converged = np.allclose(trial, theta, rtol=1e-7, atol=1e-9)
        theta, value, gradient, hessian = trial, trial_value, trial_gradient, trial_hessian
        if converged:
            break
    return float(1.0 / theta[0]), float(theta[1])


def fit_temperatures_and_priors(level_logits: Sequence[np.ndarray], level_priors: Sequence[np.ndarray],
                                level_labels: np.ndarray, parents: Sequence[np.ndarray] | None = None,
                                min_examples: int = MIN_EXAMPLES
                                ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per level (T_k, λ_k) of the fused logits L_k / T_k + λ_k · P_k, each level k > 1 fit among the
    label's siblings as `fit_temperatures` does (the factors of path confidence).

    Returns:
        (temperatures, prior weights), one per head.
    """
    level_labels = np.asarray(level_labels, dtype=np.int64)
    if level_labels.shape[1] != len(level_logits) or len(level_priors) != len(level_logits):
        raise ValueError(f"{len(level_logits)} heads, {len(level_priors)} priors, labels for "
                         f"{level_labels.shape[1]} levels")
    fitted = []
    for k, (logits, priors) in enumerate(zip(level_logits, level_priors, strict=True)):
        allowed = _siblings_of_label(level_labels, parents, k)
        fitted.append(fit_temperature_and_prior(logits, priors, level_labels[:, k], allowed,
                                                min_examples=min_examples))
    return tuple(t for t, _ in fitted), tuple(w for _, w in fitted)
