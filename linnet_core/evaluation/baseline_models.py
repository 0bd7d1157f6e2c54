"""The simple baselines ours is judged against (../shared/notes/metrics.md), as decoded paths.

Each fits on labelled training products and returns, for products it never saw, a decoded path
(`level_ids` int64[N, 7], -1 past its end) with a confidence per node (`level_confidences` float64[N, 7],
never rising down the path), so every system goes through the same metrics, thresholds and curves:
- A `tfidf_paths`: TF-IDF word 1–2-grams and char_wb 3–5-grams (sublinear tf, min_df 2, ≤100k features
  each, concatenated, L2-normalised), one-vs-rest LinearSVC (C 0.5), probabilities by a softmax over the
  decision scores with one temperature; flat over the label nodes seen in training.
- B `flat_lr_paths`: multinomial logistic regression on embeddings (standardised; the cross-validation
  gives it the model's two text embeddings), flat over the label nodes seen in training, C chosen by
  store-grouped CV on the training products only.
- C `per_level_lr_paths`: one logistic regression per level on the same embeddings (the level-k label
  is the label's level-k ancestor; shallower products left out), decoded greedily: the best level-1
  class, then the best child of the chosen node renormalised over its children, until the node has no
  child among the level's classes.
A flat system's path is its predicted node's ancestors; a node's confidence is the probability mass
of the classes under it.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from linnet_core.features import LEVELS, NO_LABEL
from linnet_core.metrics import AncestorTable
from linnet_core.training_data import hash_unit

SEED = 0
FLAT_LR_C_GRID = (0.1, 1.0)
INNER_FOLDS = 3
MAX_ITER = 200


def _padded(values: np.ndarray, fill) -> np.ndarray:
    out = np.full((len(values), LEVELS), fill, dtype=values.dtype)
    out[:, :values.shape[1]] = values
    return out


def flat_paths(probabilities: np.ndarray, classes: np.ndarray, table: AncestorTable
               ) -> tuple[np.ndarray, np.ndarray]:
    """A flat classifier's argmax node as a path, each node's confidence the mass of the classes under it."""
    class_paths = table.path_of(np.asarray(classes, np.int64))
    path = class_paths[probabilities.argmax(axis=1)]
    confidences = np.zeros(path.shape)
    for k in range(class_paths.shape[1]):
        under = class_paths[None, :, k] == path[:, k, None]
        confidences[:, k] = np.where(path[:, k] != NO_LABEL, (probabilities * under).sum(axis=1), 0.0)
    return _padded(path.astype(np.int64), NO_LABEL), _padded(confidences, 0.0)


def softmax(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = scores / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    weights = np.exp(scaled)
    return weights / weights.sum(axis=1, keepdims=True)


def fit_temperature(scores: np.ndarray, classes: np.ndarray, labels: np.ndarray) -> float:
    """The T minimising the NLL of softmax(scores / T) at the labels (rows whose label is a class)."""
    index = {int(c): i for i, c in enumerate(classes)}
    rows = np.array([i for i, y in enumerate(labels) if int(y) in index], np.int64)
    if not len(rows):
        return 1.0
    target = np.array([index[int(labels[i])] for i in rows])
    grid = np.exp(np.linspace(np.log(0.01), np.log(10.0), 61))

    def nll(t: float) -> float:
        p = softmax(scores[rows], t)
        return float(-np.mean(np.log(p[np.arange(len(rows)), target] + 1e-12)))

    return float(min(grid, key=nll))


class TfidfSvm:
    """Baseline A: TF-IDF word and character n-grams, one-vs-rest LinearSVC."""

    def __init__(self) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import FeatureUnion
        from sklearn.svm import LinearSVC

        self.features = FeatureUnion([
            ("word", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), min_df=2, sublinear_tf=True,
                                     max_features=100_000, dtype=np.float32)),
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), min_df=2, sublinear_tf=True,
                                     max_features=100_000, dtype=np.float32)),
        ])
        self.classifier = LinearSVC(C=0.5, random_state=SEED)
        self.temperature = 1.0

    def fit(self, texts: Sequence[str], gpt_ids: np.ndarray, stores: Sequence[str] | None = None) -> TfidfSvm:
        """Train on labelled texts; with `stores`, the temperature is fit on one half of the stores scored
        by a model of the other half (store-grouped held-out scores), else it stays 1.

        liblinear fits on one core, so the half model trains in a second process while this one fits
        the full model (spawned, not forked: the caller may hold TensorFlow's threads). Both fits seed
        liblinear alike, so the result is the same as fitting one after the other.
        """
        from sklearn.preprocessing import normalize

        texts, gpt_ids = list(texts), np.asarray(gpt_ids, np.int64)
        half = (np.array([hash_unit(f"tfidf:{store}") < 0.5 for store in stores]) if stores is not None
                else np.zeros(len(texts), bool))
        if not (half.any() and (~half).any()):
            self.classifier.fit(normalize(self.features.fit_transform(texts)), gpt_ids)
            return self
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            temperature = pool.submit(held_out_temperature, texts, gpt_ids, half)
            self.classifier.fit(normalize(self.features.fit_transform(texts)), gpt_ids)
            self.temperature = temperature.result()
        return self

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        return softmax(self.scores(texts), self.temperature)

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        from sklearn.preprocessing import normalize

        scores = self.classifier.decision_function(normalize(self.features.transform(texts)))
        return scores if scores.ndim == 2 else np.stack([-scores, scores], axis=1)

    @property
    def classes(self) -> np.ndarray:
        return self.classifier.classes_


def held_out_temperature(texts: list[str], gpt_ids: np.ndarray, half: np.ndarray) -> float:
    """The temperature of a `TfidfSvm` of the `half` rows, fit on its scores of the other rows."""
    inner = TfidfSvm().fit([t for t, h in zip(texts, half, strict=True) if h], gpt_ids[half])
    held = [t for t, h in zip(texts, half, strict=True) if not h]
    return fit_temperature(inner.scores(held), inner.classes, gpt_ids[~half])


def _flat_lr(c: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=MAX_ITER, random_state=SEED))


def choose_c(x: np.ndarray, y: np.ndarray, groups: np.ndarray, grid: Sequence[float] = FLAT_LR_C_GRID,
             folds: int = INNER_FOLDS) -> float:
    """The C of `grid` with the best store-grouped held-out log-likelihood on these training rows."""
    from sklearn.model_selection import GroupKFold

    splits = list(GroupKFold(n_splits=min(folds, len(np.unique(groups)))).split(x, y, groups))
    best, best_score = grid[0], -np.inf
    for c in grid:
        total = 0.0
        for fit_rows, held_rows in splits:
            model = _flat_lr(c).fit(x[fit_rows], y[fit_rows])
            classes = {int(k): i for i, k in enumerate(model.classes_)}
            p = model.predict_proba(x[held_rows])
            total += float(np.sum([np.log(p[i, classes[int(label)]] + 1e-12) if int(label) in classes
                                   else np.log(1e-12) for i, label in enumerate(y[held_rows])]))
        if total > best_score:
            best, best_score = c, total
    return best


def flat_lr_paths(train_x: np.ndarray, train_gpt: np.ndarray, train_stores: np.ndarray, test_x: np.ndarray,
                  table: AncestorTable) -> tuple[np.ndarray, np.ndarray]:
    """Baseline B on embeddings: (level_ids, level_confidences) of the test rows."""
    c = choose_c(train_x, train_gpt, train_stores)
    model = _flat_lr(c).fit(train_x, train_gpt)
    return flat_paths(model.predict_proba(test_x), model.classes_, table)


def per_level_lr_paths(train_x: np.ndarray, train_paths: np.ndarray, test_x: np.ndarray,
                       table: AncestorTable) -> tuple[np.ndarray, np.ndarray]:
    """Baseline C: one LR per level on embeddings, greedy decoding among the chosen node's children.

    Args:
        train_paths: int[N, L] each training label's ancestor node id per level (-1 past its depth).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    train_x, test_x = scaler.transform(train_x), scaler.transform(test_x)
    n = len(test_x)
    level_ids = np.full((n, LEVELS), NO_LABEL, np.int64)
    confidences = np.zeros((n, LEVELS))
    active = np.ones(n, bool)
    for k in range(train_paths.shape[1]):
        rows = train_paths[:, k] != NO_LABEL
        classes = np.unique(train_paths[rows, k])
        if not rows.any() or not active.any():
            break
        if len(classes) == 1:
            probabilities = np.ones((n, 1))
        else:
            model = LogisticRegression(max_iter=MAX_ITER, random_state=SEED)
            model.fit(train_x[rows], train_paths[rows, k])
            classes, probabilities = model.classes_, model.predict_proba(test_x).astype(np.float64)
        if k == 0:
            allowed = np.ones((n, len(classes)), bool)
        else:
            parents = table.path_of(classes)[:, k - 1]
            allowed = parents[None, :] == level_ids[:, k - 1, None]
        has_child = allowed.any(axis=1) & active
        masked = np.where(allowed, probabilities, 0.0)
        mass = masked.sum(axis=1)
        choice = masked.argmax(axis=1)
        step = np.where(mass > 0, masked[np.arange(n), choice] / np.maximum(mass, 1e-300), 0.0)
        level_ids[:, k] = np.where(has_child, classes[choice], NO_LABEL)
        confidences[:, k] = np.where(has_child, step * (confidences[:, k - 1] if k else 1.0), 0.0)
        active = has_child
    return level_ids, confidences
