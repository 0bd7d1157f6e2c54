"""Pipeline flags as `PipelineOptions` subclasses; each pipeline reads its own view of them."""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import defaults


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


def require(flags: PipelineOptions, *names: str) -> None:
    """Raise ValueError naming the missing flags (argparse `required` would break other pipelines)."""
    missing = [f"--{name}" for name in names if getattr(flags, name, None) in (None, "")]
    if missing:
        raise ValueError(f"missing required flag(s): {', '.join(missing)}")
