"""The model directory (docs/ARCHITECTURE.md) and (re-)export of its inference SavedModel.

Export always starts from the files in the model directory (weights, config, taxonomy copy,
thresholds), so `linnet train` and a later re-export with tuned thresholds build the same model.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

from linnet_core.calibration.thresholds import Thresholds, load_thresholds, save_thresholds
from linnet_core.category_prior import CATEGORY_EMBEDDINGS, CategoryEmbeddings
from linnet_core.exemplars import EXEMPLARS, Exemplars
from linnet_core.model import (
    CALIBRATION_JSON,
    LEGACY_CALIBRATION_JSON,
    MODEL_JSON,
    SHOPIFY_COPY,
    TAXONOMY_COPY,
    calibration_path,
)
from linnet_core.model.config import ModelConfig
from linnet_core.model.inference_model import InferenceModel
from linnet_core.model.training_model import build_training_model
from linnet_core.model.version import content_version, version_parts
from linnet_core.publish import replace_dir
from linnet_core.shopify import mapping_files
from linnet_core.store_context import ContextLayout
from linnet_core.taxonomy import Taxonomy, TaxonomyError

SAVED_MODEL = "saved_model"
CONFIG_JSON = "config.json"
WEIGHTS = "training_model.weights.h5"

logger = logging.getLogger(__name__)


class ModelDirError(ValueError):
    """A model directory that lacks a file export needs, or whose files disagree."""


def read_model_json(model_dir: str | Path) -> dict:
    """MODEL/model.json. Raises ModelDirError when missing."""
    path = Path(model_dir, MODEL_JSON)
    if not path.exists():
        raise ModelDirError(f"{model_dir} is not a model directory: {path} is missing")
    return json.loads(path.read_text(encoding="utf-8"))


def write_model_json(model_dir: str | Path, data: dict) -> None:
    Path(model_dir, MODEL_JSON).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def copy_shopify_mapping(shopify_dir: str | Path, model_dir: str | Path) -> None:
    """MODEL/shopify/: the files of a Shopify taxonomy folder that scoring's mapping reads, so that
    workers find it in the model directory."""
    for name in mapping_files(shopify_dir):
        target = Path(model_dir, SHOPIFY_COPY, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(shopify_dir, name), target)


def export_inference_model(model_dir: str | Path, thresholds_path: str | Path | None = None) -> Path:
    """(Re)build MODEL/saved_model from the trained weights, with new thresholds if given.

    Args:
        model_dir: a directory `linnet train` wrote.
        thresholds_path: a calibration file to bake in; it replaces MODEL/calibration.json and
            model.json's thresholds_version. None re-exports with MODEL/calibration.json.
            MODEL/category_embeddings.npz, when present, gives the taxonomy priors and
            MODEL/exemplars.npz the exemplar memory.
        The export's `model_version` is the content version of all of it
        (`linnet_core.model.version`), so new thresholds give a new version.

    Returns:
        The SavedModel directory.

    Raises:
        ModelDirError: a file is missing or the taxonomy copy does not match model.json.
        ThresholdsError, TaxonomyError: bad thresholds (e.g. an override on an unknown node).
    """
    model_dir = Path(model_dir)
    info = read_model_json(model_dir)
    for path in (model_dir / WEIGHTS, model_dir / CONFIG_JSON, model_dir / TAXONOMY_COPY,
                 calibration_path(model_dir)):
        if not path.exists():
            raise ModelDirError(f"{model_dir}: {path.name} is missing; cannot export")
    taxonomy = Taxonomy.load(model_dir / TAXONOMY_COPY)
    if taxonomy.fingerprint != info["taxonomy_fingerprint"]:
        raise ModelDirError(f"{model_dir}: taxonomy copy has fingerprint {taxonomy.fingerprint}, "
                            f"model.json says {info['taxonomy_fingerprint']}")
    thresholds = load_thresholds(thresholds_path or calibration_path(model_dir))
    _check_overrides(thresholds, taxonomy)
    config = ModelConfig.from_json(json.loads((model_dir / CONFIG_JSON).read_text(encoding="utf-8")),
                                   source=str(model_dir / CONFIG_JSON))
    network = build_training_model(config, taxonomy.level_sizes())
    network.load_weights(str(model_dir / WEIGHTS))
    embeddings_path = model_dir / CATEGORY_EMBEDDINGS
    embeddings = CategoryEmbeddings.load(embeddings_path) if embeddings_path.exists() else None
    exemplars = Exemplars.load(model_dir / EXEMPLARS) if (model_dir / EXEMPLARS).exists() else None
    parts = version_parts(model_dir, info, thresholds.to_json())
    version = content_version(parts)
    module = InferenceModel(network, taxonomy, thresholds, version,
                            info.get("default_decoding", "exact"), embeddings, exemplars)
    target = model_dir / SAVED_MODEL
    staging = Path(tempfile.mkdtemp(prefix=".saved_model-", dir=model_dir))
    try:
        module.save(str(staging))
        replace_dir(staging, target)  # by renames: model.json never sees saved_model/ missing
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    save_thresholds(thresholds, model_dir / CALIBRATION_JSON)
    (model_dir / LEGACY_CALIBRATION_JSON).unlink(missing_ok=True)
    write_model_json(model_dir, {**info, "model_version": version, "version_parts": parts,
                                 "thresholds_version": thresholds.version,
                                 "store_context_width": ContextLayout.of(taxonomy.level_sizes()).width})
    logger.info("exported %s as %s with thresholds %s", target, version, thresholds.version)
    return target


def _check_overrides(thresholds: Thresholds, taxonomy: Taxonomy) -> None:
    unknown = sorted(node_id for node_id in thresholds.overrides if node_id not in taxonomy)
    if unknown:
        raise TaxonomyError(f"thresholds {thresholds.version}: overrides on ids not in taxonomy "
                            f"{taxonomy.version}: {unknown}")
