"""The `linnet` command: one subcommand per pipeline or tool, each a `module:function(argv)`.

Subcommand modules are imported only when called, so `linnet taxonomy` does not pay for TensorFlow.
"""

from __future__ import annotations

import importlib
import logging
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "taxonomy": ("pipelines.taxonomy_command:main", "Summarize the taxonomy or describe one node."),
    "import-products": ("pipelines.import_products:run", "JSONL products → Parquet + dead letters."),
    "build-training-data": ("pipelines.build_training_data:run", "Products → embeddings → TFT → TFRecords."),
    "prepare-models": ("pipelines.prepare_models:main", "Materialize the default encoders offline."),
    "train": ("pipelines.train_command:main", "Train the hierarchical model; write a model directory."),
    "evaluate": ("pipelines.evaluate_command:main", "Metrics, report, plots and baselines vs labels."),
    "tune-thresholds": ("pipelines.tune_thresholds_command:main", "Temperatures + precision thresholds."),
    "score": ("pipelines.score:main", "Products → embeddings → categories: one partitioned table."),
    "run-local": ("pipelines.run_local:main", "The whole job on the DirectRunner over the shared data."),
    "backfill": ("pipelines.backfill:main", "Score day by day by updated_at; one partition per day."),
    "dataflow-submit": ("pipelines.dataflow_submit:main", "Stage the model, run score/backfill on Dataflow."),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: linnet COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_text}" for name, (_, help_text) in COMMANDS.items()]
    return "\n".join(lines)


def _log_progress() -> None:
    """LinNét's own INFO lines (progress of long stages, slow events) on stderr; other libraries'
    (Beam's, TensorFlow's) from WARNING, as before."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("linnet_core", "pipelines"):
        logging.getLogger(name).setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Dispatch `linnet COMMAND ARGS...` to the command's entry point; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] not in COMMANDS:
        print(f"linnet: unknown command {argv[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    _log_progress()
    module_name, function_name = COMMANDS[argv[0]][0].split(":")
    entry = getattr(importlib.import_module(module_name), function_name)
    result = entry(argv[1:])
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
