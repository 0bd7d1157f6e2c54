"""The hierarchical model: config, input fn, training model, distributed training, inference model
(constrained decoding and thresholds as TF ops), export, and the Predictor that loads the export.

TensorFlow lives here and nowhere else in `linnet_core`; import the submodules you need.
"""

MODEL_JSON = "model.json"
"""The model directory's metadata file; named here so launchers can read it without TensorFlow."""
