"""Evaluation: join predictions with labels, metrics per system, baselines, report.md and plots."""
