"""The `linnet` command: one subcommand per pipeline or tool, each a `module:function(argv)`.

Subcommand modules are imported only when called, so `linnet taxonomy` does not pay for TensorFlow.
A command that fails prints one line, `linnet COMMAND: what went wrong`, and exits 1 (2 for a usage
error such as an unknown flag); `--verbose` anywhere on the line shows the traceback instead.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import sys

from pipelines.usage import UsageError

VERBOSE = "--verbose"
MAX_MESSAGE_CHARS = 500

COMMANDS: dict[str, tuple[str, str]] = {
    "taxonomy": ("pipelines.taxonomy_command:main", "Summarize the taxonomy or describe one node."),
    "import-products": ("pipelines.import_products:run", "JSONL products → Parquet + dead letters."),
    "build-training-data": ("pipelines.build_training_data:run", "Products → embeddings → TFT → TFRecords."),
    "prepare-models": ("pipelines.prepare_models:main", "Materialize the default encoders offline."),
    "train": ("pipelines.train_command:main", "Train the hierarchical model; write a model directory."),
    "evaluate": ("pipelines.evaluate_command:main", "Metrics, report, plots and baselines vs labels."),
    "tune-thresholds": ("pipelines.tune_thresholds_command:main", "Temperatures + precision thresholds."),
    "cross-validate": ("pipelines.crossval_command:main", "Ours vs baselines on the same store folds."),
    "audit-labels": ("pipelines.audit_labels_command:main", "Rank doubtful training labels; store × branch."),
    "review-queue": ("pipelines.review_queue:main", "Unlabelled products → what to label next, and why."),
    "score": ("pipelines.score:main", "Products → embeddings → categories: one partitioned table."),
    "run-local": ("pipelines.run_local:main", "The whole job on the DirectRunner over the shared data."),
    "backfill": ("pipelines.backfill:main", "Score day by day by updated_at; one partition per day."),
    "dataflow-submit": ("pipelines.dataflow_submit:main", "Stage the model, run score/backfill on Dataflow."),
    "serve": ("serving.command:main", "Online categorization over HTTP: the rows `score` writes."),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: linnet COMMAND [ARGS...] [--verbose]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_text}" for name, (_, help_text) in COMMANDS.items()]
    return "\n".join(lines)


def one_line(error: BaseException) -> str:
    """An exception as one line: its message's first line (Beam appends worker stacks), bounded."""
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    if not isinstance(error, (ValueError, OSError, LookupError)):  # not a user's mistake: say what broke
        text = f"{type(error).__name__}: {text}"
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "…"


def _log_progress() -> None:
    """LinNét's own INFO lines (progress of long stages, slow events) on stderr; other libraries'
    (Beam's, TensorFlow's) from WARNING, as before."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("linnet_core", "pipelines", "serving"):
        logging.getLogger(name).setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Dispatch `linnet COMMAND ARGS...` to the command's entry point; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    verbose = VERBOSE in argv
    argv = [arg for arg in argv if arg != VERBOSE]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] not in COMMANDS:
        close = difflib.get_close_matches(argv[0], COMMANDS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        print(f"linnet: unknown command {argv[0]!r}{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    _log_progress()
    module_name, function_name = COMMANDS[argv[0]][0].split(":")
    try:
        entry = getattr(importlib.import_module(module_name), function_name)
        result = entry(argv[1:])
    except Exception as error:  # noqa: BLE001 - every failure ends as one line (or a traceback on request)
        if verbose:
            raise
        hint = "" if isinstance(error, UsageError) else f" (run with {VERBOSE} for the traceback)"
        print(f"linnet {argv[0]}: {one_line(error)}{hint}", file=sys.stderr)
        return 2 if isinstance(error, UsageError) else 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
