"""A stand-in model directory for staging tests: content files and a model.json naming their version."""

from __future__ import annotations

import json
from pathlib import Path

from linnet_core.calibration.thresholds import Thresholds, save_thresholds
from linnet_core.model import CALIBRATION_JSON, MODEL_JSON
from linnet_core.model.version import directory_version


def write_stand_in_model(folder: Path, level_threshold: float = 0.5) -> str:
    """Writes what `stage_model` reads (weights, a SavedModel, thresholds, model.json with the content
    version export would give them); returns that version."""
    (folder / "saved_model" / "variables").mkdir(parents=True, exist_ok=True)
    (folder / "saved_model" / "saved_model.pb").write_bytes(f"graph {level_threshold}".encode())
    (folder / "saved_model" / "variables" / "variables.index").write_bytes(b"index")
    (folder / "training_model.weights.h5").write_bytes(b"weights")
    save_thresholds(Thresholds("manual-test", (level_threshold,) * 7), folder / CALIBRATION_JSON)
    info = {"taxonomy_version": "tiny-1", "taxonomy_fingerprint": "f00d"}
    (folder / MODEL_JSON).write_text(json.dumps(info))
    version = directory_version(folder)
    (folder / MODEL_JSON).write_text(json.dumps({**info, "model_version": version}))
    return version
