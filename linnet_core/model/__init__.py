"""The hierarchical model: config, input fn, training model, distributed training, inference model
(constrained decoding and thresholds as TF ops), export, and the Predictor that loads the export.

TensorFlow lives here and nowhere else in `linnet_core`; import the submodules you need.
"""

from pathlib import Path

MODEL_JSON = "model.json"
"""The model directory's metadata file; named here so launchers can read it without TensorFlow."""
CALIBRATION_JSON = "calibration.json"
"""The calibration baked into the model directory's SavedModel (`calibration.thresholds.Thresholds`):
per-level thresholds and temperatures, evidence weights, the first pass's fusion, per-node floors."""
LEGACY_CALIBRATION_JSON = "thresholds.json"
"""CALIBRATION_JSON's name in model directories written before 2026-12-07; still read."""


def calibration_path(model_dir: str | Path) -> Path:
    """MODEL/calibration.json, or MODEL/thresholds.json where only that older name exists, so model
    directories already deployed keep loading."""
    model_dir = Path(model_dir)
    legacy = model_dir / LEGACY_CALIBRATION_JSON
    current = model_dir / CALIBRATION_JSON
    return legacy if legacy.exists() and not current.exists() else current


TAXONOMY_COPY = "taxonomy-with-ids.en-US.txt"
"""The model's taxonomy: its classes index it, and workers read node names from it."""
SHOPIFY_COPY = "shopify"
"""The Shopify mapping folder (`shopify.mapping_files`) that scored rows' Shopify category comes from."""
