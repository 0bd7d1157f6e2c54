"""Model size and training hyperparameters: one JSON file, defaults in linnet_core/config/model.json."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from importlib import resources
from pathlib import Path

from linnet_core.features import LEVELS


class ConfigError(ValueError):
    """A config file or value that does not fit ModelConfig."""


@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of the training model; each field is documented under "doc" in the default file."""

    shared_units: tuple[int, ...]
    level_units: tuple[int, ...]
    dropout: float
    l2: float
    learning_rate: float
    epochs: int
    batch_size: int
    loss_weights: tuple[float, ...]
    shuffle_buffer: int
    seed: int
    exemplars_per_class: int
    exemplars_per_store_class: int

    def __post_init__(self) -> None:
        if not self.shared_units or any(units < 1 for units in self.shared_units + self.level_units):
            raise ConfigError(f"layer widths must be positive with >= 1 shared layer: "
                              f"shared_units={self.shared_units}, level_units={self.level_units}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.l2 < 0:
            raise ConfigError(f"l2 must be >= 0, got {self.l2}")
        if self.learning_rate <= 0 or self.epochs < 1 or self.batch_size < 1 or self.shuffle_buffer < 1:
            raise ConfigError(
                "learning_rate, epochs, batch_size, shuffle_buffer must be positive: "
                f"{self.learning_rate}, {self.epochs}, {self.batch_size}, {self.shuffle_buffer}")
        if self.exemplars_per_class < 0 or self.exemplars_per_store_class < 0:
            raise ConfigError(f"exemplar caps must be >= 0 (0: no cap), got {self.exemplars_per_class}, "
                              f"{self.exemplars_per_store_class}")
        if len(self.loss_weights) != LEVELS or any(w < 0 for w in self.loss_weights):
            raise ConfigError(f"loss_weights needs {LEVELS} non-negative values, "
                              f"got {list(self.loss_weights)}")

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict, source: str = "<dict>") -> ModelConfig:
        """Defaults from the packaged file, overridden by `data`; unknown keys are an error (typos)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names - {"doc"})
        if unknown:
            raise ConfigError(f"{source}: unknown config keys {unknown}; known: {sorted(names)}")
        merged = {**_default_values(), **{k: v for k, v in data.items() if k in names}}
        try:
            return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in merged.items()})
        except TypeError as error:
            raise ConfigError(f"{source}: {error}") from error


def _default_values() -> dict:
    text = resources.files("linnet_core").joinpath("config/model.json").read_text(encoding="utf-8")
    return {k: v for k, v in json.loads(text).items() if k != "doc"}


def default_config() -> ModelConfig:
    """The documented defaults (linnet_core/config/model.json)."""
    return ModelConfig.from_json({}, source="defaults")


def load_config(path: str | Path | None) -> ModelConfig:
    """Read a config file (keys it omits take the defaults); None gives the defaults.

    Raises:
        ConfigError: the file is not JSON, has unknown keys, or has out-of-range values.
    """
    if path is None:
        return default_config()
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: not JSON: {error}") from error
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return ModelConfig.from_json(data, source=str(path))
