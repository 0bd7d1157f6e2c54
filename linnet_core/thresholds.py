"""The thresholds file (`thresholds.json`): per-level temperatures and thresholds, per-node floors.

The inference SavedModel bakes one of these in at export; its format is the contract in
docs/ARCHITECTURE.md. Standard library only, so evaluation and tuning code can read it without TF.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

LEVELS = 7
CONFIDENCES = ("path",)
DEFAULT_LEVEL_THRESHOLD = 0.5


class ThresholdsError(ValueError):
    """A thresholds file or value that does not fit the format."""


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

    def __post_init__(self) -> None:
        _check_vector("levels", self.levels, low=0.0, high=1.0)
        _check_vector("temperatures", self.temperatures, low=0.0, high=math.inf, strict_low=True)
        if self.confidence not in CONFIDENCES:
            raise ThresholdsError(f"confidence must be one of {CONFIDENCES}, got {self.confidence!r}")
        for node_id, floor in self.overrides.items():
            if not isinstance(node_id, int) or not 0.0 <= floor <= 1.0:
                raise ThresholdsError(f"override {node_id!r}: {floor!r}: want int id, floor in [0, 1]")
        if self.target_precision is not None and not 0.0 < self.target_precision <= 1.0:
            raise ThresholdsError(f"target_precision must be in (0, 1], got {self.target_precision!r}")

    def to_json(self) -> dict:
        """The file's JSON object (override keys as strings, as JSON requires)."""
        data = asdict(self)
        data["levels"] = list(self.levels)
        data["temperatures"] = list(self.temperatures)
        data["overrides"] = {str(node_id): floor for node_id, floor in sorted(self.overrides.items())}
        return data

    @classmethod
    def from_json(cls, data: dict, source: str = "<dict>") -> Thresholds:
        """Build from the file's JSON object. Raises ThresholdsError naming `source` on bad content."""
        try:
            overrides = {int(key): float(floor) for key, floor in (data.get("overrides") or {}).items()}
            target = data.get("target_precision")
            return cls(
                version=str(data["version"]),
                levels=tuple(float(v) for v in data["levels"]),
                temperatures=tuple(float(v) for v in data.get("temperatures") or (1.0,) * LEVELS),
                overrides=overrides,
                confidence=str(data.get("confidence", "path")),
                target_precision=None if target is None else float(target),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ThresholdsError(f"{source}: not a thresholds file: {error}") from error


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
    """Read a thresholds file. Raises ThresholdsError (bad content) or OSError (unreadable)."""
    with open(path, encoding="utf-8") as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as error:
            raise ThresholdsError(f"{path}: not JSON: {error}") from error
    return Thresholds.from_json(data, source=str(path))


def save_thresholds(thresholds: Thresholds, path: str | Path) -> None:
    """Write a thresholds file (pretty JSON)."""
    Path(path).write_text(json.dumps(thresholds.to_json(), indent=2) + "\n", encoding="utf-8")
