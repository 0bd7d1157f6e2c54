"""Pipeline flags as `PipelineOptions` subclasses; each pipeline reads its own view of them."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

from pipelines import defaults
from pipelines.usage import ArgumentParser, UsageError

BEAM_FLAGS = ("Beam pipeline flags (--runner, --direct_num_workers, --project, --region, --temp_location, "
              "...) are accepted too.")


class _PipelineArgumentParser(ArgumentParser, _BeamArgumentParser):
    """Strict parsing (`usage.ArgumentParser`) of the flags Beam's options classes declare."""


def pipeline_options(argv: Sequence[str] | None, prog: str, *own: type[PipelineOptions],
                     description: str | None = None) -> PipelineOptions:
    """The options of a Beam command, parsed strictly: Beam itself only warns about a flag no options
    class knows and runs without it. `--help` lists the command's `own` flags and exits.

    Raises:
        UsageError: an unknown flag (naming the closest known one) or a bad value.
    """
    argv = list(argv or [])
    if "-h" in argv or "--help" in argv:
        helper = _PipelineArgumentParser(prog=prog, description=description, epilog=BEAM_FLAGS,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
        for options_class in own:
            options_class._add_argparse_args(helper)
        helper.print_help()
        raise SystemExit(0)
    parser = _PipelineArgumentParser(prog=prog, add_help=False)
    for options_class in {str(cls): cls for cls in PipelineOptions.__subclasses__()}.values():
        options_class._add_argparse_args(parser)
    parser.parse_args(argv)
    return PipelineOptions(argv)


class ProductInputOptions(PipelineOptions):
    """Where products come from."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument("--input", default=defaults.PRODUCTS_JSONL,
                            help="JSONL or Parquet glob(s), local or gs://, comma-separated")
        parser.add_argument("--image_root", "--image-root", dest="image_root", default=None,
                            help="resolve relative image paths against this folder "
                                 "(default: the input file's folder)")
        parser.add_argument("--input_table", "--input-table", dest="input_table", default=None,
                            help="BigQuery table PROJECT.DATASET.TABLE to read instead of files")
        parser.add_argument("--query", default=None, help="BigQuery SQL to read instead of files")
        parser.add_argument("--taxonomy", default=defaults.TAXONOMY, help="GPT taxonomy-with-ids file")


class OutputOptions(PipelineOptions):
    """Where tables go."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        # Not `required`: Beam parses every registered options class for every pipeline.
        parser.add_argument("--output", default=None, help="output folder (local or gs://)")
        parser.add_argument("--output_dataset", "--output-dataset", dest="output_dataset", default=None,
                            help="BigQuery PROJECT.DATASET for the output tables instead of files")
        parser.add_argument("--run_id", "--run-id", dest="run_id", default=None,
                            help="run identifier recorded in lineage columns (default: a timestamp)")


class ModelOptions(PipelineOptions):
    """The model a pipeline runs (`score`, `backfill`, `review-queue`), declared once: Beam registers every
    options class for every pipeline, so a flag two classes declare breaks the parse of both."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument("--model", default=str(defaults.OUTPUT / "model"),
                            help="model directory (local or gs://)")
        parser.add_argument("--max_batch_size", "--max-batch-size", dest="max_batch_size", type=int,
                            default=256, help="upper cap on the model's batch size")


def require(flags: PipelineOptions, *names: str) -> None:
    """Raise UsageError naming the missing flags (argparse `required` would break other pipelines)."""
    missing = [f"--{name}" for name in names if getattr(flags, name, None) in (None, "")]
    if missing:
        raise UsageError(f"missing required flag(s): {', '.join(missing)}")
