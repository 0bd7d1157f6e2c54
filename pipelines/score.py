"""`linnet score`: products → validate → deduplicate → embed → store context → categorize → partitioned
tables.

Rows in = categorized rows + dead letters, always; the run summary checks it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions, TestOptions

from linnet_core import __version__, decisions
from linnet_core.calibration.thresholds import load_thresholds
from linnet_core.categorization import Lineage, prediction_row
from linnet_core.model import SHOPIFY_COPY, TAXONOMY_COPY
from linnet_core.shopify import ShopifyMapping
from linnet_core.taxonomy import Taxonomy
from pipelines.bigquery import BigQueryOptions
from pipelines.counters import Accounting, beam_counters, committed, counter, records_in
from pipelines.dead_letters import Routed
from pipelines.embed import (
    IMAGE_STATUSES,
    EmbeddingOptions,
    EmbedProducts,
    failed_batch_dead_letters,
    local_copy,
)
from pipelines.io import DeduplicateProducts
from pipelines.options import ModelOptions, OutputOptions, ProductInputOptions, pipeline_options, require
from pipelines.partitions import Partition, new_attempt
from pipelines.sources import embedding_total, product_source, table_sinks
from pipelines.store_context import STORE_CONTEXT, SavedModelHandler, StoreContext, model_info
from pipelines.usage import UsageError, add_renamed_flag
from pipelines.watermark import AdvanceWatermark

LOGGER = logging.getLogger(__name__)
CATEGORIZED = "categorized"
DEAD_LETTERS = "dead_letters"
SCORE_STAGE = "score"


class ScoreOptions(PipelineOptions):
    """Flags of `linnet score` beyond input (`ProductInputOptions`), output (`OutputOptions`), the model
    (`ModelOptions`) and embedding (`EmbeddingOptions`). Beam parses only direct subclasses of
    PipelineOptions."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument("--decoding", choices=("exact", "greedy"), default=None,
                            help="decoding mode (default: the one baked into the model)")
        add_renamed_flag(parser, parser.add_argument(
            "--calibration", default=None,
            help="calibration.json whose thresholds to use instead of the model's baked-in ones"),
            "--thresholds")
        parser.add_argument("--partition", default=None,
                            help="logical date YYYY-MM-DD (or run id) naming the output partition")
        parser.add_argument("--watermark", default=None,
                            help="advance this watermark file to the partition's day after the commit")
        parser.add_argument("--store_context", "--store-context", dest="store_context", default=None,
                            help="directory of the store-context tables (any Beam filesystem): each store's "
                                 "products scored in earlier runs give context to today's, and this run's "
                                 "products update it; default: context from this run's products only")


class CategorizerModelHandler(SavedModelHandler):
    """RunInference handler for the inference SavedModel: one model per worker process.

    Elements are embedded product records; the result of each is the SavedModel's outputs for it.
    """

    def __init__(self, model_dir: str, decoding: str | None = None,
                 thresholds: Sequence[float] | None = None, max_batch_size: int = 256) -> None:
        super().__init__(model_dir, max_batch_size)
        self.decoding = decoding
        self.thresholds = thresholds

    def run_inference(self, batch: Sequence[dict], model: Any,
                      inference_args: dict | None = None) -> Iterable[PredictionResult]:
        inputs = self.inputs(batch)
        context = (np.stack([np.asarray(record[STORE_CONTEXT], np.float32) for record in batch])
                   if all(STORE_CONTEXT in record for record in batch) else None)
        outputs = model.predict(inputs, decoding=self.decoding, thresholds=self.thresholds,
                                store_context=context)
        for index, record in enumerate(batch):
            yield PredictionResult(record, {name: value[index] for name, value in outputs.items()},
                                   model_id=model.model_version)

    def get_metrics_namespace(self) -> str:
        return "linnet_categorize"


def load_taxonomies(model_dir: str) -> tuple[Taxonomy, ShopifyMapping | None]:
    """The taxonomy and the Shopify mapping (None when the model has none) that travel in the model
    directory (local or gs://): what a row builder needs, on a worker or in the online service."""
    local = Path(local_copy(model_dir, only=(TAXONOMY_COPY, SHOPIFY_COPY)))
    taxonomy = Taxonomy.load(local / TAXONOMY_COPY)
    shopify = local / SHOPIFY_COPY
    return taxonomy, (ShopifyMapping.load(shopify, taxonomy) if shopify.is_dir() else None)


class ToCategorizedRowFn(beam.DoFn):
    """A prediction → a categorized row with lineage (`linnet_core.categorization`).

    The taxonomy and the Shopify mapping come from the model directory (local or gs://), which is all
    a worker is given. `scored_at` is stamped here, per row: the job a launcher builds may run much
    later (a queued Dataflow job, a retried bundle), and `run_id` already names the run.
    """

    def __init__(self, model_dir: str, lineage: dict[str, Any]) -> None:
        self.model_dir = model_dir
        self.lineage = lineage
        self.decisions = {name: counter(f"decision_{name}") for name in decisions.NAMES}

    def setup(self) -> None:
        self.taxonomy, self.shopify = load_taxonomies(self.model_dir)

    def process(self, element: tuple[str, PredictionResult]) -> Iterator[dict[str, Any]]:
        _, result = element
        lineage = Lineage(model_version=result.model_id, scored_at=dt.datetime.now(dt.UTC), **self.lineage)
        row = prediction_row(result.example, result.inference, lineage, self.taxonomy, self.shopify)
        self.decisions[row["decision"]].inc()
        yield row


class Categorize(beam.PTransform):
    """Embedded records → `Routed`: categorized rows, and dead letters of failed batches.

    Args:
        model_dir: the model directory (`linnet train`), local or gs://.
        lineage: taxonomy_version, thresholds_version, code_version and run_id for every row.
    """

    def __init__(self, model_dir: str, lineage: dict[str, Any], decoding: str | None = None,
                 thresholds: Sequence[float] | None = None, max_batch_size: int = 256) -> None:
        super().__init__()
        self.handler = KeyedModelHandler(CategorizerModelHandler(model_dir, decoding, thresholds,
                                                                 max_batch_size))
        self.row_fn = ToCategorizedRowFn(model_dir, lineage)

    def expand(self, embedded: beam.PCollection) -> Routed:
        predictions, failures = (
            embedded
            | "KeyById" >> beam.WithKeys(lambda record: record["product_id"])
            | "RunInference" >> RunInference(self.handler).with_exception_handling()
        )
        rows = predictions | "ToRow" >> beam.ParDo(self.row_fn)
        dead = failures.failed_inferences | "FailedBatches" >> beam.FlatMap(
            failed_batch_dead_letters, stage=SCORE_STAGE)
        return Routed(rows, dead)


def code_version() -> str:
    """The package version, plus the git commit when running from a checkout."""
    import subprocess

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, check=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{commit}"


def base_lineage(info: dict, run_id: str, thresholds_version: str | None = None) -> dict[str, str]:
    """The lineage a run stamps on every row, but `model_version` (the loaded model's) and `scored_at`:
    from model.json, the calibration file used (default the model's) and this code."""
    return {"taxonomy_version": info["taxonomy_version"],
            "thresholds_version": thresholds_version or info["thresholds_version"],
            "code_version": code_version(), "run_id": run_id}


def build(products: Routed, embed: beam.PTransform, context: StoreContext,
          categorize: Categorize, write: beam.PTransform, run_id: str) -> beam.PCollection:
    """The scoring graph: validated products → deduplicate → embed → store context → categorize → write.

    `products` is what a read routed (`sources.product_source`); `write` takes
    `{categorized: rows, dead_letters: rows}` and commits both (`sources.table_sinks`). Returns its
    output (the partition manifests).
    """
    unique = products.records | "DeduplicateProducts" >> DeduplicateProducts(run_id)
    embedded = unique.records | "EmbedProducts" >> embed
    in_store = embedded.records | "StoreContext" >> context
    categorized = in_store.records | "Categorize" >> categorize
    dead = ((products.dead_letter, unique.dead_letter, embedded.dead_letter, in_store.dead_letter,
             categorized.dead_letter)
            | "MergeDeadLetters" >> beam.Flatten())
    return {CATEGORIZED: categorized.records, DEAD_LETTERS: dead} | "WriteTables" >> write


def run_summary(result: beam.runners.runner.PipelineResult, run_id: str, partition: Partition) -> dict:
    """Counts of one run from its metrics; `balanced` says whether rows in = rows out + dead letters."""
    accounting = Accounting(records_in(result), committed(result, f"{CATEGORIZED}_rows_committed"),
                            committed(result, f"{DEAD_LETTERS}_rows_committed"))
    summary = {
        "run_id": run_id,
        "partition": partition.name,
        "rows_in": accounting.records_in,
        "rows_out": accounting.records_out,
        "dead_letters": accounting.dead_letters,
        "duplicates_superseded": committed(result, "duplicates_superseded"),
        "decisions": {name: committed(result, f"decision_{name}") for name in decisions.NAMES},
        "images": {name: committed(result, f"image_{name}") for name in IMAGE_STATUSES},
    }
    summary["balanced"] = accounting.balanced
    summary["counters"] = beam_counters(result)
    return summary


def _write_summary(output: str | None, summary: dict) -> None:
    if not output:
        return
    path = FileSystems.join(output, "_runs", f"{summary['run_id']}.json")
    if "://" not in path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    with FileSystems.create(path) as handle:
        handle.write(json.dumps(summary, indent=2).encode())


def _pipeline_for(options: PipelineOptions, partition: Partition, run_id: str, watermark: str | None,
                  only_updated_on_day: bool, test_pipeline: beam.Pipeline | None) -> beam.Pipeline:
    flags, outputs = options.view_as(ScoreOptions), options.view_as(OutputOptions)
    model = options.view_as(ModelOptions)
    require(model, "model")
    if not (outputs.output or outputs.output_dataset):
        raise UsageError("give --output (files) or --output_dataset (BigQuery)")
    info = model_info(model.model)
    levels, thresholds_version = None, info["thresholds_version"]
    if flags.calibration:
        chosen = load_thresholds(flags.calibration)
        levels, thresholds_version = list(chosen.levels), chosen.version
    lineage = base_lineage(info, run_id, thresholds_version)
    pipeline = test_pipeline or beam.Pipeline(options=options)
    day = partition.day if only_updated_on_day else None
    products = pipeline | "ReadProducts" >> product_source(options, day, run_id, optional_labels=True)
    categorize = Categorize(model.model, lineage, flags.decoding, levels, model.max_batch_size)
    context = StoreContext(model.model, int(info["store_context_width"]), run_id, flags.store_context,
                           {key: info[key] for key in ("model_version", "thresholds_version")},
                           model.max_batch_size)
    write = table_sinks(options, {CATEGORIZED: "categorized", DEAD_LETTERS: "dead_letters"}, partition,
                        run_id)
    total = None if only_updated_on_day else embedding_total(options)  # a day's share is not known
    embed = EmbedProducts.from_options(options, run_id, total, model.model)
    manifests = build(products, embed, context, categorize, write, run_id)
    if watermark:
        day = partition.day
        if day is None:
            raise ValueError("--watermark needs a date partition")
        _ = manifests | "AdvanceWatermark" >> AdvanceWatermark(watermark, day, run_id)
    return pipeline


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None,
        only_updated_on_day: bool = False) -> dict:
    """Score one partition (`--partition`, default today's UTC date); returns the run summary
    (`dry_run: true` and no counts when `--dry_run` only built the job).

    Args:
        only_updated_on_day: score only the products whose `updated_at` falls on the partition's day
            (what backfills do); otherwise every input product.

    Raises:
        RecordsLostError: rows in ≠ rows out + dead letters (nothing may be lost).
        ValueError: missing flags, or --model is not a model directory.
    """
    options = pipeline_options(argv, "linnet score", ProductInputOptions, OutputOptions, ModelOptions,
                               ScoreOptions, EmbeddingOptions, BigQueryOptions, description=__doc__)
    flags, outputs = options.view_as(ScoreOptions), options.view_as(OutputOptions)
    run_id = outputs.run_id or new_attempt()
    partition = Partition.parse(flags.partition or dt.datetime.now(dt.UTC).date().isoformat())
    pipeline = _pipeline_for(options, partition, run_id, flags.watermark, only_updated_on_day, test_pipeline)
    result = pipeline.run()
    result.wait_until_finish()
    if options.view_as(TestOptions).dry_run:  # a job built (DataflowRunner), not run: nothing to count
        summary = {"run_id": run_id, "partition": partition.name, "dry_run": True,
                   "model": options.view_as(ModelOptions).model}
        print(json.dumps(summary, indent=2))
        return summary
    summary = run_summary(result, run_id, partition)
    _write_summary(outputs.output, summary)
    print(json.dumps(summary, indent=2))
    Accounting(summary["rows_in"], summary["rows_out"], summary["dead_letters"]).check(f"run {run_id}")
    return summary


def score_partition(day: dt.date, argv: list[str]) -> dict:
    """`linnet backfill`'s scorer: the products updated on `day` → partition `date=day`."""
    return run([*argv, f"--partition={day.isoformat()}"], only_updated_on_day=True)


def main(argv: list[str] | None = None) -> int:
    """`linnet score` entry point."""
    run(argv)
    return 0
