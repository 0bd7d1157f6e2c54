"""The calibration file (`calibration.json`): per-level thresholds and temperatures, the evidence
weights, the first pass's fusion and per-node floors.

The inference SavedModel bakes one of these in at export; its format is the contract in
docs/ARCHITECTURE.md. Also: the numpy statement of how thresholds cut a decoded path, Clopper–Pearson
bounds, and precision-target tuning. numpy and scipy only, so no TF is needed to tune.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
from scipy import stats

from linnet_core.features import LEVELS

CONFIDENCES = ("path",)
# The evidence fused into the model's logits besides its own heads (docs/ARCHITECTURE.md): the taxonomy
# prior of the full text and of the title, the exemplar memory's neighbour shares (PRODUCT_EVIDENCE: each
# from the product alone), and the store context (what the store's other products' first-pass
# predictions say, linnet_core.store_context).
TEXT_PRIOR, TITLE_PRIOR, EXEMPLAR_SHARES = "text_prior", "title_prior", "exemplars"
STORE_CONTEXT = "store_context"
PRODUCT_EVIDENCE = (TEXT_PRIOR, TITLE_PRIOR, EXEMPLAR_SHARES)
EVIDENCE = (*PRODUCT_EVIDENCE, STORE_CONTEXT)
DEFAULT_LEVEL_THRESHOLD = 0.5
DELTA = 0.05
BOOTSTRAP_RESAMPLES = 400
# The precision target of `linnet tune-thresholds`, `run-local` and `make`: below the ~0.8 up to which
# targets have held on unseen stores (docs/experiments/).
DEFAULT_TARGET_PRECISION = 0.7
# Floors for sensitive subtrees shipped with the package (`load_floors(None)`).
DEFAULT_FLOORS = "config/sensitive_categories.json"
# The threshold of a level or subtree that no threshold could certify: the float32 just above 1.0, so
# that even a saturated confidence (exactly 1.0 in float32) is below it in the model and in numpy.
CLOSED = float(np.nextafter(np.float32(1.0), np.float32(2.0)))


class ThresholdsError(ValueError):
    """A calibration file or value that does not fit the format."""


@dataclass(frozen=True)
class Thresholds:
    """Per-level temperatures and thresholds plus per-node floors that cover whole subtrees.

    `confidence` names what is compared with a threshold; "path" is the product of the
    child-renormalised probabilities from level 1 down to the node (the probability of the subtree).
    """

    version: str
    levels: tuple[float, ...]
    temperatures: tuple[float, ...] = (1.0,) * LEVELS
    overrides: dict[int, float] = field(default_factory=dict)
    confidence: str = "path"
    target_precision: float | None = None
    # w_e,k: the weight of evidence e at level k in the fused logits L_k / T_k + Σ_e w_e,k · E_e,k
    # (an evidence left out weighs 0)
    evidence_weights: dict[str, tuple[float, ...]] = field(default_factory=dict)
    # The fusion of the first pass, whose predictions make the store context: temperatures and product
    # evidence weights fit without store context (None: no store context, its weight must be 0).
    first_pass: FirstPass | None = None

    def __post_init__(self) -> None:
        _check_vector("levels", self.levels, low=0.0, high=CLOSED)
        _check_vector("temperatures", self.temperatures, low=0.0, high=math.inf, strict_low=True)
        _check_weights(self.evidence_weights, EVIDENCE)
        if any(self.weights(STORE_CONTEXT)) and self.first_pass is None:
            raise ThresholdsError("store_context has weight but the file has no first_pass fusion")
        if self.confidence not in CONFIDENCES:
            raise ThresholdsError(f"confidence must be one of {CONFIDENCES}, got {self.confidence!r}")
        for node_id, floor in self.overrides.items():
            if not isinstance(node_id, int) or not 0.0 <= floor <= CLOSED:
                raise ThresholdsError(f"override {node_id!r}: {floor!r}: want int id, floor in [0, 1] "
                                      f"or CLOSED")
        if self.target_precision is not None and not 0.0 < self.target_precision <= 1.0:
            raise ThresholdsError(f"target_precision must be in (0, 1], got {self.target_precision!r}")

    def weights(self, name: str) -> tuple[float, ...]:
        """The per-level weights of evidence `name` (zeros when the file gives none)."""
        return self.evidence_weights.get(name, (0.0,) * LEVELS)

    def to_json(self) -> dict:
        """The file's JSON object (override keys as strings, as JSON requires)."""
        data = asdict(self)
        data["levels"] = list(self.levels)
        data["temperatures"] = list(self.temperatures)
        data["evidence_weights"] = _weights_json(self.evidence_weights)
        if self.first_pass is None:
            del data["first_pass"]
        else:
            data["first_pass"] = {"temperatures": list(self.first_pass.temperatures),
                                  "evidence_weights": _weights_json(self.first_pass.evidence_weights)}
        data["overrides"] = {str(node_id): floor for node_id, floor in sorted(self.overrides.items())}
        return data

    @classmethod
    def from_json(cls, data: dict, source: str = "<dict>") -> Thresholds:
        """Build from the file's JSON object. Raises ThresholdsError naming `source` on bad content."""
        try:
            overrides = {int(key): float(floor) for key, floor in (data.get("overrides") or {}).items()}
            target = data.get("target_precision")
            first = data.get("first_pass")
            return cls(
                version=str(data["version"]),
                levels=tuple(float(v) for v in data["levels"]),
                temperatures=tuple(float(v) for v in data.get("temperatures") or (1.0,) * LEVELS),
                overrides=overrides,
                confidence=str(data.get("confidence", "path")),
                target_precision=None if target is None else float(target),
                evidence_weights=_weights_of(data.get("evidence_weights")),
                first_pass=None if first is None else FirstPass(
                    tuple(float(v) for v in first["temperatures"]),
                    _weights_of(first.get("evidence_weights"))),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ThresholdsError(f"{source}: not a calibration file: {error}") from error


@dataclass(frozen=True)
class FirstPass:
    """Temperatures and product-evidence weights of the first pass (the fusion without store context)."""

    temperatures: tuple[float, ...]
    evidence_weights: dict[str, tuple[float, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_vector("first_pass.temperatures", self.temperatures, low=0.0, high=math.inf, strict_low=True)
        _check_weights(self.evidence_weights, PRODUCT_EVIDENCE)

    def weights(self, name: str) -> tuple[float, ...]:
        return self.evidence_weights.get(name, (0.0,) * LEVELS)


def _check_weights(weights: dict[str, tuple[float, ...]], known: tuple[str, ...]) -> None:
    for name, values in weights.items():
        if name not in known:
            raise ThresholdsError(f"unknown evidence {name!r} in evidence_weights; known: {known}")
        _check_vector(f"evidence_weights[{name}]", values, low=0.0, high=math.inf)


def _weights_json(weights: dict[str, tuple[float, ...]]) -> dict[str, list[float]]:
    return {name: list(weights[name]) for name in EVIDENCE if name in weights}


def _weights_of(data: dict | None) -> dict[str, tuple[float, ...]]:
    return {str(name): tuple(float(v) for v in values) for name, values in (data or {}).items()}


def _check_vector(name: str, values: tuple[float, ...], low: float, high: float,
                  strict_low: bool = False) -> None:
    if len(values) != LEVELS:
        raise ThresholdsError(f"{name} needs {LEVELS} values, got {len(values)}: {list(values)}")
    for value in values:
        if not (low < value if strict_low else low <= value) or not value <= high or math.isnan(value):
            bracket = "(" if strict_low else "["
            raise ThresholdsError(f"{name} value {value!r} outside {bracket}{low}, {high}]")


def default_thresholds() -> Thresholds:
    """Before tuning: a node is predicted when the model gives its subtree more than even odds."""
    return Thresholds(version="default", levels=(DEFAULT_LEVEL_THRESHOLD,) * LEVELS)


def load_thresholds(path: str | Path) -> Thresholds:
    """Read a calibration file. Raises ThresholdsError (bad content) or OSError (unreadable)."""
    with open(path, encoding="utf-8") as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as error:
            raise ThresholdsError(f"{path}: not JSON: {error}") from error
    return Thresholds.from_json(data, source=str(path))


def save_thresholds(thresholds: Thresholds, path: str | Path) -> None:
    """Write a calibration file (pretty JSON)."""
    Path(path).write_text(json.dumps(thresholds.to_json(), indent=2) + "\n", encoding="utf-8")


# -- versions ----------------------------------------------------------------------------------------
def content_version(levels: tuple[float, ...], temperatures: tuple[float, ...], overrides: dict[int, float],
                    target_precision: float | None,
                    evidence_weights: dict[str, tuple[float, ...]] | None = None,
                    first_pass: FirstPass | None = None) -> str:
    """A version that names the content: equal thresholds give equal versions, run after run (all-zero
    evidence weights and no first pass leave the payload, and so the versions of older files, as they
    were)."""
    content = [list(levels), list(temperatures), sorted(overrides.items()), target_precision]
    weights = {name: list(w) for name, w in sorted((evidence_weights or {}).items()) if any(w)}
    first = ([list(first_pass.temperatures), {name: list(w) for name, w in
                                              sorted(first_pass.evidence_weights.items()) if any(w)}]
             if first_pass is not None else None)
    payload = json.dumps(content + ([weights] if weights or first else []) + ([first] if first else []))
    prefix = "manual" if target_precision is None else f"p{target_precision:g}"
    return f"{prefix}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


# -- applying thresholds to decoded paths ------------------------------------------------------------
def effective_thresholds(level_ids: np.ndarray, thresholds: Thresholds) -> np.ndarray:
    """float64[N, L]: each decoded node's threshold, max of its level's and every override on its path.

    Args:
        level_ids: int[N, L] decoded path node ids per level, -1 past the path's end.
    """
    level_ids = np.asarray(level_ids, dtype=np.int64)
    width = level_ids.shape[1]
    base = np.broadcast_to(np.asarray(thresholds.levels[:width], dtype=np.float64), level_ids.shape)
    if not thresholds.overrides:
        return base.copy()
    keys = np.array(sorted(thresholds.overrides), dtype=np.int64)
    floors = np.array([thresholds.overrides[int(k)] for k in keys], dtype=np.float64)
    position = np.minimum(np.searchsorted(keys, level_ids), len(keys) - 1)
    floor = np.where(keys[position] == level_ids, floors[position], 0.0)
    # An override covers the node's whole subtree: carry the largest floor seen so far down the path.
    return np.maximum(base, np.maximum.accumulate(floor, axis=1))


def cut_depth(level_ids: np.ndarray, level_confidences: np.ndarray, thresholds: Thresholds) -> np.ndarray:
    """int[N]: how many levels of each decoded path survive cutting before the first node below threshold.

    This is the numpy statement of the rule the inference model applies as TF ops; tuning and the
    evaluation's operating curves use it to try many thresholds without re-exporting the model.
    """
    level_ids = np.asarray(level_ids, dtype=np.int64)
    clears = np.asarray(level_confidences) >= effective_thresholds(level_ids, thresholds)
    passing = (level_ids != -1) & clears
    return np.cumprod(passing, axis=1).sum(axis=1)


def cut_paths(level_ids: np.ndarray, level_confidences: np.ndarray, thresholds: Thresholds,
              back_off: bool = True) -> np.ndarray:
    """int64[N]: the prediction for each decoded path after thresholds (-1 = abstained).

    With `back_off` the prediction is the deepest node before the cut; without it (the published
    design) a path that does not clear every threshold down to its end gets no prediction.
    """
    level_ids = np.asarray(level_ids, dtype=np.int64)
    depth = cut_depth(level_ids, level_confidences, thresholds)
    if not back_off:
        depth = np.where(depth == (level_ids != -1).sum(axis=1), depth, 0)
    rows = np.arange(len(level_ids))
    return np.where(depth > 0, level_ids[rows, np.maximum(depth - 1, 0)], -1)


# -- Clopper–Pearson ---------------------------------------------------------------------------------
def clopper_pearson_upper(errors: np.ndarray | int, n: np.ndarray | int, delta: float = DELTA) -> np.ndarray:
    """One-sided Clopper–Pearson upper bound, at confidence 1 − δ, on an error rate seen as errors/n.

    The bound u solves P(Binomial(n, u) ≤ errors) = δ, i.e. u = Beta⁻¹(1 − δ; errors + 1, n − errors);
    u = 1 when errors = n (or n = 0: nothing seen bounds nothing).
    """
    errors, n = np.broadcast_arrays(np.asarray(errors, dtype=np.float64), np.asarray(n, dtype=np.float64))
    if np.any(errors < 0) or np.any(errors > n):
        raise ValueError("need 0 <= errors <= n")
    bound = np.ones(errors.shape)
    open_ = errors < n
    if open_.any():
        bound[open_] = stats.beta.ppf(1.0 - delta, errors[open_] + 1.0, n[open_] - errors[open_])
    return bound


# -- precision-target selection ----------------------------------------------------------------------
@dataclass(frozen=True)
class Selection:
    """The threshold chosen for one group (a level, or a subtree) and the evidence for it."""

    threshold: float
    covered: int
    errors: int
    upper_bound: float
    n: int

    @property
    def coverage(self) -> float:
        return self.covered / self.n if self.n else 0.0


def store_bootstrap_upper(wrong: np.ndarray, clusters: np.ndarray, candidates: np.ndarray,
                          delta: float = DELTA, resamples: int = BOOTSTRAP_RESAMPLES) -> np.ndarray:
    """Upper (1 − δ) bound on the error rate among the first `candidates[i] + 1` items, resampling whole
    clusters (stores) with replacement: errors of one store's products go together (one store files all
    its sneakers under one wrong branch, and the store context spreads a branch over a store), which the
    binomial bound, counting products as independent, does not see. Seeded: the same input gives the same
    bound, run after run.

    Args:
        wrong: bool[N] items in the candidate order (highest confidence first).
        clusters: [N] each item's store, same order.
        candidates: int[K] indexes into that order.
    """
    _, index = np.unique(np.asarray(clusters).astype(str), return_inverse=True)
    stores = int(index.max()) + 1
    covered = np.zeros((len(wrong), stores))
    covered[np.arange(len(wrong)), index] = 1.0
    errors = np.cumsum(covered * np.asarray(wrong, bool)[:, None], axis=0)[candidates]
    covered = np.cumsum(covered, axis=0)[candidates]
    draws = np.random.default_rng(0).multinomial(stores, np.full(stores, 1.0 / stores), size=resamples)
    rates = (errors @ draws.T) / np.maximum(covered @ draws.T, 1.0)
    return np.quantile(rates, 1.0 - delta, axis=1)


def select_threshold(confidence: np.ndarray, correct: np.ndarray, target_precision: float,
                     delta: float = DELTA, clusters: np.ndarray | None = None) -> Selection:
    """The smallest θ whose upper bound on the error among items with confidence ≥ θ is ≤ 1 − target:
    Clopper–Pearson, and with `clusters` (each item's store) also the store bootstrap bound, whichever
    is larger. Candidates are the observed confidences; when none qualifies θ = CLOSED.

    Args:
        confidence: float[N] the confidence that is thresholded.
        correct: bool[N] whether each item's prediction is right.
        clusters: [N] the store of each item, or None (items independent).
    """
    if not 0.0 < target_precision < 1.0:
        raise ThresholdsError(f"target precision must be in (0, 1), got {target_precision!r}")
    confidence = np.asarray(confidence, dtype=np.float64)
    wrong = ~np.asarray(correct, dtype=bool)
    if confidence.shape != wrong.shape:
        raise ValueError(f"confidence {confidence.shape} and correct {wrong.shape} differ in shape")
    if not len(confidence):
        return Selection(CLOSED, 0, 0, 1.0, 0)
    order = np.argsort(-confidence, kind="stable")
    ordered = confidence[order]
    last = np.flatnonzero(np.append(ordered[1:] != ordered[:-1], True))
    covered = last + 1
    errors = np.cumsum(wrong[order])[last]
    # The bound is never below the observed error rate, so only candidates whose rate meets the target
    # can qualify: bounding just those gives the same choice at a fraction of the cost.
    bound = np.ones(len(covered))
    possible = errors <= (1.0 - target_precision) * covered
    bound[possible] = clopper_pearson_upper(errors[possible], covered[possible], delta)
    if clusters is not None and possible.any():
        clustered = store_bootstrap_upper(wrong[order], np.asarray(clusters)[order], last[possible], delta)
        bound[possible] = np.maximum(bound[possible], clustered)
    ok = np.flatnonzero(bound <= 1.0 - target_precision)
    if not len(ok):
        return Selection(CLOSED, 0, 0, 1.0, len(confidence))
    best = ok[-1]  # candidates run from high to low confidence: the last that qualifies is the smallest θ
    return Selection(float(ordered[last[best]]), int(covered[best]), int(errors[best]), float(bound[best]),
                     len(confidence))



def node_correctness(level_ids: np.ndarray, true_level_ids: np.ndarray) -> np.ndarray:
    """bool[N, L]: whether each decoded node is the label's ancestor at its level.

    A decoded node below the label's depth is wrong: it adds to |α| and not to |α ∩ β| in hP.
    """
    return (np.asarray(level_ids) == np.asarray(true_level_ids)) & (np.asarray(level_ids) != -1)


def _covered_nodes(level_ids: np.ndarray, confidences: np.ndarray, correct: np.ndarray,
                   thresholds: Thresholds) -> tuple[int, int]:
    """(nodes kept after the cut, wrong nodes among them), summed over products."""
    depth = cut_depth(level_ids, confidences, thresholds)
    kept = np.arange(level_ids.shape[1])[None, :] < depth[:, None]
    return int(kept.sum()), int((kept & ~correct).sum())


def _subtree_floor(level_ids: np.ndarray, confidences: np.ndarray, correct: np.ndarray, base: Thresholds,
                   target_precision: float, delta: float) -> Selection:
    """The smallest floor on one level-1 subtree whose covered nodes meet the target (with bound).

    Counts are of decoded nodes (a product covered to depth 3 adds 3), as hP counts them.
    """
    candidates = np.unique(np.concatenate([[0.0], confidences[level_ids != -1]]))
    covered_nodes, wrong_nodes = [], []
    for floor in candidates:
        trial = Thresholds(base.version, tuple(max(t, float(floor)) for t in base.levels), base.temperatures,
                           base.overrides)
        covered, wrong = _covered_nodes(level_ids, confidences, correct, trial)
        covered_nodes.append(covered)
        wrong_nodes.append(wrong)
    bound = clopper_pearson_upper(np.array(wrong_nodes), np.array(covered_nodes), delta)
    ok = np.flatnonzero(bound <= 1.0 - target_precision)
    nodes = int((level_ids != -1).sum())
    if not len(ok):
        return Selection(CLOSED, 0, 0, 1.0, nodes)
    best = ok[0]
    return Selection(float(candidates[best]), covered_nodes[best], wrong_nodes[best], float(bound[best]),
                     nodes)


def tune(level_ids: np.ndarray, level_confidences: np.ndarray, true_level_ids: np.ndarray,
         target_precision: float, temperatures: tuple[float, ...] = (1.0,) * LEVELS,
         floors: dict[int, float] | None = None, per_subtree: bool = False, delta: float = DELTA,
         min_subtree_nodes: int = 50, evidence_weights: dict[str, tuple[float, ...]] | None = None,
         first_pass: FirstPass | None = None, stores: np.ndarray | None = None) -> tuple[Thresholds, dict]:
    """Precision-target thresholds from decoded paths on a calibration split.

    Per level k, over labelled products whose decoded path reaches level k, θ_k is the smallest
    threshold whose Clopper–Pearson bound on the error of the covered level-k nodes is ≤ 1 − target.
    `floors` (sensitive subtrees) become overrides. With `per_subtree`, a level-1 subtree with at
    least `min_subtree_nodes` covered nodes whose nodes miss the target under the level thresholds
    gets the smallest override (floor) that meets it: the file format can raise a subtree's
    thresholds, never lower them.

    Args:
        level_ids, level_confidences: [N, L] decoded paths (calibrated confidences) before thresholds.
        true_level_ids: int[N, L] the label's ancestor per level, -1 past its depth (all -1: unlabelled).
        stores: [N] each product's store: the level bounds then also resample whole stores
            (`store_bootstrap_upper`), so a target certified here holds on other stores.

    Returns:
        (thresholds with a content version, a JSON-able report of the evidence per level and subtree).
    """
    level_ids = np.asarray(level_ids, dtype=np.int64)
    confidences = np.asarray(level_confidences, dtype=np.float64)
    true_level_ids = np.asarray(true_level_ids, dtype=np.int64)
    if not level_ids.shape == confidences.shape == true_level_ids.shape or level_ids.shape[1] != LEVELS:
        raise ValueError(f"need three [N, {LEVELS}] arrays, got {level_ids.shape}, {confidences.shape}, "
                         f"{true_level_ids.shape}")
    labelled = true_level_ids[:, 0] != -1
    level_ids, confidences = level_ids[labelled], confidences[labelled]
    stores = None if stores is None else np.asarray(stores)[labelled]
    correct = node_correctness(level_ids, true_level_ids[labelled])
    selections = []
    for k in range(LEVELS):
        reached = level_ids[:, k] != -1
        selections.append(select_threshold(confidences[reached, k], correct[reached, k], target_precision,
                                           delta, None if stores is None else stores[reached]))
    overrides = {int(node): float(floor) for node, floor in (floors or {}).items()}
    base = Thresholds("tuning", tuple(s.threshold for s in selections), tuple(temperatures), overrides)
    report: dict = {"target_precision": target_precision, "delta": delta, "n_labelled": int(labelled.sum()),
                    "levels": [asdict(s) | {"coverage": s.coverage} for s in selections], "subtrees": {}}
    if per_subtree:
        for root in np.unique(level_ids[:, 0][level_ids[:, 0] != -1]):
            rows = level_ids[:, 0] == root
            covered, wrong = _covered_nodes(level_ids[rows], confidences[rows], correct[rows], base)
            meets = clopper_pearson_upper(wrong, covered, delta) <= 1.0 - target_precision
            if covered < min_subtree_nodes or meets:
                continue
            choice = _subtree_floor(level_ids[rows], confidences[rows], correct[rows], base,
                                    target_precision, delta)
            overrides[int(root)] = max(overrides.get(int(root), 0.0), choice.threshold)
            report["subtrees"][str(int(root))] = asdict(choice) | {"coverage": choice.coverage}
    levels = tuple(s.threshold for s in selections)
    evidence_weights = dict(evidence_weights or {})
    version = content_version(levels, tuple(temperatures), overrides, target_precision, evidence_weights,
                              first_pass)
    tuned = Thresholds(version, levels, tuple(temperatures), overrides, target_precision=target_precision,
                       evidence_weights=evidence_weights, first_pass=first_pass)
    return tuned, report


# -- sensitive subtrees ------------------------------------------------------------------------------
def floors_text(path: str | Path | None = None) -> str:
    """A floors file's text; None: the package's own (`linnet_core/config/sensitive_categories.json`),
    so that tuning needs no checkout."""
    if path is None:
        return resources.files("linnet_core").joinpath(DEFAULT_FLOORS).read_text(encoding="utf-8")
    return Path(path).read_text(encoding="utf-8")


def load_floors(path: str | Path | None, taxonomy=None) -> dict[int, float]:
    """Manual floors for sensitive subtrees from a JSON file `{"floors": [{"id", "path", "floor"}, ...]}`
    (None: the package's default floors, `floors_text`).

    With a taxonomy, each id must exist and its `path` (when given) must name the same node.

    Raises:
        ThresholdsError: bad content, an unknown id or a path that does not match its id.
    """
    try:
        data = json.loads(floors_text(path))
        entries = data["floors"]
        floors = {int(entry["id"]): float(entry["floor"]) for entry in entries}
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ThresholdsError(f"{path}: not a floors file: {error}") from error
    for node_id, floor in floors.items():
        if not 0.0 <= floor <= 1.0:
            raise ThresholdsError(f"{path}: floor {floor!r} of {node_id} outside [0, 1]")
    if taxonomy is not None:
        for entry in entries:
            try:
                taxonomy.resolve(entry["id"], entry.get("path"))
            except ValueError as error:
                raise ThresholdsError(f"{path}: {error}") from error
    return floors
