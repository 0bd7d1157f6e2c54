"""Training curves (curves.json, curves.png), validation of the exported model, and MODEL_CARD.md."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from linnet_core import metrics
from linnet_core.features import LEVELS
from linnet_core.model.data import level_name, model_inputs, read_split
from linnet_core.model.decoding import EXACT, MODES
from linnet_core.model.predictor import Predictor
from linnet_core.taxonomy import Taxonomy

CURVES_JSON = "curves.json"
CURVES_PNG = "curves.png"
MODEL_CARD = "MODEL_CARD.md"


def curves(history: dict[str, list[float]], depth: int) -> dict:
    """Per-epoch training and validation loss and accuracy, total and per level, from Keras history
    (validation lists empty when no split was held out)."""
    per_level = {}
    for level in range(1, depth + 1):
        name = level_name(level)
        per_level[name] = {key: [float(v) for v in history.get(f"{prefix}{name}_{metric}", [])]
                           for key, prefix, metric in (("loss", "", "loss"), ("accuracy", "", "accuracy"),
                                                       ("val_loss", "val_", "loss"),
                                                       ("val_accuracy", "val_", "accuracy"))}
    return {
        "epochs": list(range(1, len(history["loss"]) + 1)),
        "loss": [float(v) for v in history["loss"]],
        "val_loss": [float(v) for v in history.get("val_loss", [])],
        "levels": per_level,
        "notes": "per-level loss is class-weighted cross-entropy (weight 0 where unlabelled); "
                 "accuracy is over examples labelled at that level",
    }


def write_curves(curve_data: dict, model_dir: Path) -> None:
    """curves.json and a two-panel PNG: validation (else training) loss and accuracy per level, per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    (model_dir / CURVES_JSON).write_text(json.dumps(curve_data, indent=2) + "\n", encoding="utf-8")
    held_out = bool(curve_data["val_loss"])
    prefix, what = ("val_", "validation") if held_out else ("", "training")
    figure, (loss_axes, accuracy_axes) = pyplot.subplots(1, 2, figsize=(12, 4.5))
    for name, values in curve_data["levels"].items():
        loss_axes.plot(curve_data["epochs"], values[f"{prefix}loss"], marker="o", label=name)
        accuracy_axes.plot(curve_data["epochs"], values[f"{prefix}accuracy"], marker="o", label=name)
    loss_axes.set(title=f"{what} loss per level", xlabel="epoch", ylabel="weighted cross-entropy")
    accuracy_axes.set(title=f"{what} accuracy per level", xlabel="epoch", ylabel="accuracy",
                      ylim=(0, 1))
    accuracy_axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    figure.savefig(model_dir / CURVES_PNG, dpi=100)
    pyplot.close(figure)


def evaluate_split(model_dir: Path, data_dir: Path, split: str, taxonomy: Taxonomy) -> dict:
    """Hierarchical metrics of the exported model on one split, per decoding mode, at the baked
    thresholds and with no thresholds (full decoded paths)."""
    predictor = Predictor(model_dir, taxonomy)
    arrays = read_split(data_dir, split)
    inputs = model_inputs(arrays)
    table = metrics.AncestorTable(taxonomy)
    result = {}
    for mode in MODES:
        for setting, levels in (("thresholds", None), ("no_thresholds", np.zeros(LEVELS, np.float32))):
            output = predictor.predict(inputs, decoding=mode, thresholds=levels,
                                       use_overrides=levels is None)
            result[f"{mode}/{setting}"] = metrics.compute_metrics(
                output["gpt_id"], arrays["gpt_id"], table, output["level_ids"], output["level_confidences"])
    return result


def write_model_card(model_dir: Path, info: dict, validation: dict) -> None:
    """MODEL_CARD.md: what the model is, what it was trained on, how it decodes, how well it did."""
    config = info["config"]
    training = info["training"]
    rows = "\n".join(
        f"| {key} | {m['hF1']:.3f} | {m['hP']:.3f} | {m['hR']:.3f} | {m['exact_accuracy']:.3f} | "
        f"{m['coverage']:.3f} | {m['leaf_coverage']:.3f} |" for key, m in validation.items())
    if validation:
        levels = " / ".join(f"{a:.3f}" for a in validation[f"{EXACT}/no_thresholds"]["level_accuracy"])
        held_out = f"""| decoding/thresholds | hF1 | hP | hR | exact acc. | coverage | leaf coverage |
|---|---|---|---|---|---|---|
{rows}

Per-level accuracy (exact decoding, full paths): {levels}."""
    else:
        held_out = ("None: the model learnt from every labelled store (splits "
                    f"{', '.join(training.get('splits', []))}). Quality on unseen stores is what "
                    "`linnet cross-validate` and a model trained with `--holdout validation` measure.")
    text = f"""# Model card: {info['model_version']}

## What it is
A multi-task classifier into the Google Product Taxonomy {info['taxonomy_version']}
(fingerprint `{info['taxonomy_fingerprint']}`; classes per level {info['level_sizes']}).
Inputs: two 384-d multilingual text embeddings (the product's full text, and its title and type), a
1280-d MobileNet-V2 image embedding (zeros without a photo) and an image-present flag. Shared layers
{config['shared_units']}, per-level layers {config['level_units']}; the level-k head reads the shared
layer and level k-1's softmax. Seven class-weighted cross-entropy losses (unlabelled levels weigh 0),
summed with weights {config['loss_weights']}. No parent/child constraint in training.

## Inference (saved_model/)
The heads' logits are fused with evidence beside the network (docs/training.md): the taxonomy prior
of each text embedding and the shares of the nearest exemplars in the memory of training products
({info.get('exemplars', 0)} exemplars); weights and temperatures come from `linnet tune-thresholds`.
Decoding is constrained to valid taxonomy paths, inside the SavedModel: `exact` (default; the most
probable root-to-leaf path, probabilities renormalised over siblings) or `greedy` (the published
best-child-at-each-level). Confidence is the path probability, the model's probability that the
product lies in the node's subtree. The path is cut before the first node below its threshold
(per-level thresholds, per-node floors over whole subtrees): the prediction is the deepest confident
node (back-off), or none. Thresholds: version `{info['thresholds_version']}` (calibration.json).

## Training
{training['train_examples']} training examples (splits {', '.join(training.get('splits', ['train']))},
{training.get('stores', '?')} stores) and {training['validation_examples']} validation examples from
`{training['data_dir']}`; {config['epochs']} epochs, batch {config['batch_size']}, Adam
lr {config['learning_rate']}, dropout {config['dropout']}, seed {config['seed']};
{training['workers']} worker(s), {training['train_seconds']} s. Curves: curves.json, curves.png.

## Validation (split by store)
Hierarchical precision/recall/F1, exact accuracy and coverage as ../shared/notes/metrics.md defines.

{held_out}

## Limits
Labels are store-assigned and roughly 75-80% right, which caps measured accuracy; stores in
validation differ from those in training, but the acceptance stores differ again. The model knows
only the taxonomy it was trained on: the Predictor refuses any other (fingerprint check).
"""
    (model_dir / MODEL_CARD).write_text(text, encoding="utf-8")
