"""Calibration: from a trained model to the decision it ships with (`linnet tune-thresholds`).

`crossfit` scores the calibration set as unseen stores are scored, `fusion` fits the temperatures and
evidence weights on it, `thresholds` holds the calibration file, its floors and the precision-target
selection, and `tuning` runs the whole and re-exports the model. Import the submodules you need.
"""
