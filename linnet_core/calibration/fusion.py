"""Calibration of the fused logits: per level one temperature for the network's logits and one weight
per evidence beside it, fit on held-out products by minimising NLL.

The model's level-k logits are L_k / T_k + Σ_e w_e,k · E_e,k (model/decoding.py). Fitting T and the
weights by NLL on products the network never saw makes confidences honest, which the
precision-target thresholds rely on, and lets the data say how far to trust the network against the
evidence on unseen stores. Confidences are path probabilities, products of each node's probability
renormalised over its siblings, so level k > 1 is fit on exactly those factors: the NLL of the label
among the children of the label's parent. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

T_MIN, T_MAX = 0.05, 1000.0  # T up to 1000: on unseen stores the network may deserve almost no weight
WEIGHT_MAX = 1000.0  # e5 cosines span a narrow band (~0.7–0.9): evidence weights of 100–200 are typical
MIN_EXAMPLES = 50  # a level with fewer labelled examples takes the fit of the level above
_MASKED = -1e30
_CHUNK = 2048  # rows per step of the NLL's derivatives (bounded memory for large levels)


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


def _siblings_of_label(level_labels: np.ndarray, parents: Sequence[np.ndarray] | None,
                       k: int) -> np.ndarray | None:
    """bool[N, C_k]: the classes sharing the label's parent (None: level 1, or no parents given)."""
    if parents is None or k == 0:
        return None
    parent_of_label = np.where(level_labels[:, k] >= 0, level_labels[:, k - 1], -2)
    return np.asarray(parents[k])[None, :] == parent_of_label[:, None]


def _compact(features: np.ndarray, allowed: np.ndarray, labels: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Only each row's allowed classes, left-packed: features [N, G, F], allowed [N, G], the label's
    position; G is the largest allowed group (a level-k row allows only its label's siblings)."""
    counts = allowed.sum(axis=1)
    width = int(counts.max())
    columns = np.argsort(~allowed, axis=1, kind="stable")[:, :width]
    valid = np.arange(width)[None, :] < counts[:, None]
    packed = np.take_along_axis(features, columns[:, :, None], axis=1) * valid[:, :, None]
    position = np.argmax(columns == labels[:, None], axis=1)
    return packed, valid, position


def _fused_nll_and_derivatives(features: np.ndarray, allowed: np.ndarray, labels: np.ndarray,
                               theta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean NLL of softmax(θ · f) over allowed classes, its gradient and Hessian in θ.

    features: [N, C, F] per class (logit, evidence...). The NLL is convex in θ (a log-sum-exp of linear
    functions minus a linear one): gradient E_p[f] − f_label, Hessian E_p[f fᵀ] − E_p[f] E_p[f]ᵀ.
    """
    n, dims = len(labels), features.shape[2]
    value, gradient, hessian = 0.0, np.zeros(dims), np.zeros((dims, dims))
    for start in range(0, n, _CHUNK):
        f, a, y = features[start:start + _CHUNK], allowed[start:start + _CHUNK], labels[start:start + _CHUNK]
        scores = np.where(a, f @ theta, -np.inf)
        top = scores.max(axis=1, keepdims=True)
        weights = np.exp(scores - top)
        norm = weights.sum(axis=1, keepdims=True)
        probabilities = weights / norm
        rows = np.arange(len(y))
        value += float(np.sum(top[:, 0] + np.log(norm[:, 0]) - scores[rows, y]))
        mean = np.einsum("nc,nci->ni", probabilities, f)
        gradient += (mean - f[rows, y]).sum(axis=0)
        second = np.einsum("nc,nci,ncj->ij", probabilities, f, f)
        hessian += second - mean.T @ mean
    return value / n, gradient / n, hessian / n


def fit_fusion(logits: np.ndarray, evidence: Sequence[np.ndarray], labels: np.ndarray,
               allowed: np.ndarray | None = None, iterations: int = 50,
               min_examples: int = 1) -> tuple[float, tuple[float, ...]] | None:
    """(T, weights) minimising the NLL of softmax(logits / T + Σ_e w_e · evidence_e) over the `allowed`
    classes of the labelled rows, T in [T_MIN, T_MAX], each w_e in [0, WEIGHT_MAX]; None with fewer
    than `min_examples` labelled rows.

    In θ = (1/T, w) the NLL is convex, so a projected, damped Newton step from (1, 0, ...) finds the
    minimum in a few iterations without step sizes to tune.
    """
    for scores in evidence:
        if np.shape(scores) != np.shape(logits):
            raise ValueError(f"evidence {np.shape(scores)} must match logits {np.shape(logits)}")
    keep = np.asarray(labels) >= 0
    logits, labels, allowed = _labelled(logits, labels, allowed)
    if len(labels) < max(min_examples, 1):
        return None
    columns = [logits] + [np.asarray(scores, np.float64)[keep] for scores in evidence]
    features = np.stack([np.where(allowed, column, 0.0) for column in columns], axis=-1)
    features, allowed, labels = _compact(features, allowed, labels)
    dims = features.shape[2]
    low = np.array([1.0 / T_MAX] + [0.0] * (dims - 1))
    high = np.array([1.0 / T_MIN] + [WEIGHT_MAX] * (dims - 1))
    theta = np.array([1.0] + [0.0] * (dims - 1))
    value, gradient, hessian = _fused_nll_and_derivatives(features, allowed, labels, theta)
    for _ in range(iterations):
        step = np.linalg.solve(hessian + 1e-9 * np.eye(dims), gradient)
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
    return float(1.0 / theta[0]), tuple(float(w) for w in theta[1:])


def fit_fusions(level_logits: Sequence[np.ndarray], level_evidence: Sequence[Sequence[np.ndarray]],
                level_labels: np.ndarray, parents: Sequence[np.ndarray] | None = None,
                min_examples: int = MIN_EXAMPLES) -> tuple[tuple[float, ...], tuple[tuple[float, ...], ...]]:
    """Per level (T_k, w_k) of the fused logits, level k > 1 fit among the label's siblings.

    Args:
        level_logits: per level, float[N, C_k] raw logits of that head.
        level_evidence: per evidence, per level, float[N, C_k] scores (may be empty: temperatures only).
        level_labels: int[N, L] class index of the label's ancestor per level, -1 where none.
        parents: per level, int[C_k] class index of each class's parent at level k-1; given, level
            k > 1 is fit among the label's siblings only (the factors of path confidence).
        min_examples: a level with fewer labelled rows takes the fit of the level above (level 1:
            T = 1 and weights 0).

    Returns:
        (temperatures per level, per evidence the weights per level).
    """
    level_labels = np.asarray(level_labels, dtype=np.int64)
    depths = [len(scores) for scores in level_evidence]
    if level_labels.shape[1] != len(level_logits) or any(d != len(level_logits) for d in depths):
        raise ValueError(f"{len(level_logits)} heads, evidence for {depths} levels, "
                         f"labels for {level_labels.shape[1]} levels")
    fitted: list[tuple[float, tuple[float, ...]]] = []
    for k, logits in enumerate(level_logits):
        allowed = _siblings_of_label(level_labels, parents, k)
        fit = fit_fusion(logits, [e[k] for e in level_evidence], level_labels[:, k], allowed,
                         min_examples=min_examples)
        fitted.append(fit or (fitted[-1] if fitted else (1.0, (0.0,) * len(level_evidence))))
    temperatures = tuple(t for t, _ in fitted)
    weights = tuple(tuple(w[e] for _, w in fitted) for e in range(len(level_evidence)))
    return temperatures, weights
