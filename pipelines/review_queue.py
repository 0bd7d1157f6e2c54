"""`linnet review-queue`: unlabelled products → validate → deduplicate → embed → store context →
uncertainty → one pick over all of them (`linnet_core.review_queue`: uncertain, in thinly covered
branches, spread over stores) → the queue, each product with its reason (Parquet and CSV), and dead
letters, published whole (`publish.published`: a failed run leaves the previous queue). Records in =
candidates + dead letters, checked at the end.

Example:
  linnet review-queue --model out/model --input new_products.jsonl --budget 200 --output out/review_queue
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pandas as pd
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from linnet_core import review_queue
from linnet_core.exemplars import EXEMPLARS, Exemplars
from linnet_core.features import NO_LABEL
from linnet_core.model import TAXONOMY_COPY
from linnet_core.taxonomy import Taxonomy
from pipelines.counters import Accounting, committed, counter, records_in
from pipelines.dead_letters import Routed
from pipelines.embed import EmbeddingOptions, EmbedProducts, failed_batch_dead_letters, local_copy
from pipelines.io import DeduplicateProducts, WriteTable
from pipelines.options import ModelOptions, OutputOptions, ProductInputOptions, pipeline_options, require
from pipelines.partitions import new_attempt
from pipelines.publish import published
from pipelines.sources import product_source, refuse_bigquery_input
from pipelines.store_context import STORE_CONTEXT, SavedModelHandler, StoreContext, model_info

LOGGER = logging.getLogger(__name__)
QUEUE = "review_queue"  # .parquet and .csv in --output
STAGE = "review_queue"
COLUMNS = ("rank", "product_id", "store", "title", "predicted_id", "predicted_path", "margin", "entropy",
           "branch_coverage", "priority", "reason")


class ReviewQueueOptions(PipelineOptions):
    """Flags of `linnet review-queue` beyond input, output, the model (`ModelOptions`) and embedding."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument("--budget", type=int, default=None, help="products to queue for labelling")
        parser.add_argument("--per_store_cap", "--per-store-cap", dest="per_store_cap", type=int,
                            default=None,
                            help="at most this many per store (default: the budget shared evenly "
                                 "among stores)")


class UncertaintyModelHandler(SavedModelHandler):
    """RunInference handler: embedded records (with store context) → the decoded path and the level-1
    margin, entropy and two best branches of each."""

    def run_inference(self, batch: Sequence[dict], model: Any,
                      inference_args: dict | None = None) -> Iterable[PredictionResult]:
        inputs = self.inputs(batch)
        context = np.stack([np.asarray(record[STORE_CONTEXT], np.float32) for record in batch])
        decoded = model.predict(inputs, store_context=context)
        margin, entropy, top = review_queue.level1_uncertainty(model.level_probabilities(inputs)["level_1"])
        for i, record in enumerate(batch):
            yield PredictionResult(record, {"level_ids": decoded["level_ids"][i].tolist(),
                                            "margin": float(margin[i]), "entropy": float(entropy[i]),
                                            "top": top[i].tolist()}, model_id=model.model_version)

    def get_metrics_namespace(self) -> str:
        return "linnet_review_queue"


class ToCandidateFn(beam.DoFn):
    """A prediction → the few fields the pick needs (no vectors travel to the single pick step)."""

    def __init__(self) -> None:
        self.candidates = counter("review_candidates")

    def process(self, element: tuple[str, PredictionResult]) -> Iterator[dict]:
        product_id, result = element
        self.candidates.inc()
        yield {"product_id": product_id, "store": result.example.get("store") or "",
               "title": result.example.get("title") or "", **result.inference}


class PickQueueFn(beam.DoFn):
    """Every candidate (one list) → the queue rows in pick order: coverage of each decoded branch from
    the model's exemplar memory (the training labels it learnt from), then `review_queue.select`."""

    def __init__(self, model_dir: str, budget: int, per_store_cap: int | None) -> None:
        self.model_dir = model_dir
        self.budget = budget
        self.per_store_cap = per_store_cap

    def setup(self) -> None:
        local = Path(local_copy(self.model_dir, only=(TAXONOMY_COPY, EXEMPLARS)))
        self.taxonomy = Taxonomy.load(local / TAXONOMY_COPY)
        labels = Exemplars.load(local / EXEMPLARS).labels
        self.counts = [np.bincount(labels[:, k][labels[:, k] >= 0], minlength=size)
                       for k, size in enumerate(self.taxonomy.level_sizes()[:2])]

    def _coverage(self, level_ids: Sequence[int]) -> tuple[int, int]:
        """(the node whose coverage counts: decoded level 2, else level 1; its training labels)."""
        level = 2 if len(level_ids) > 1 and level_ids[1] != NO_LABEL else 1
        node = int(level_ids[level - 1])
        return node, int(self.counts[level - 1][self.taxonomy.level_index(node)])

    def process(self, candidates: list[dict]) -> Iterator[list[dict]]:
        covered = [self._coverage(c["level_ids"]) for c in candidates]
        pool = review_queue.Candidates(
            np.array([c["product_id"] for c in candidates], dtype=object),
            np.array([c["store"] for c in candidates], dtype=object),
            np.array([c["margin"] for c in candidates]), np.array([c["entropy"] for c in candidates]),
            np.array([node for node, _ in covered], np.int64), np.array([n for _, n in covered], np.int64))
        picked = review_queue.select(pool, self.budget, self.per_store_cap)
        level1 = self.taxonomy.level_ids(1)
        tops = [tuple(self.taxonomy.node(level1[j]).name for j in candidates[row]["top"]) for row in picked]
        names = {int(pool.branch[row]): self.taxonomy.node(int(pool.branch[row])).full_path for row in picked}
        why = review_queue.reasons(pool, picked, names, tops)
        priority = review_queue.priority(pool)
        rows = []
        for rank, (row, reason) in enumerate(zip(picked, why, strict=True), start=1):
            ids = [i for i in candidates[row]["level_ids"] if i != NO_LABEL]
            rows.append({"rank": rank, "product_id": pool.product_id[row], "store": pool.store[row],
                         "title": candidates[row]["title"], "predicted_id": ids[-1] if ids else NO_LABEL,
                         "predicted_path": self.taxonomy.node(ids[-1]).full_path if ids else "",
                         "margin": pool.margin[row], "entropy": pool.entropy[row],
                         "branch_coverage": int(pool.coverage[row]), "priority": float(priority[row]),
                         "reason": reason})
        yield rows


def write_queue(rows: list[dict], output: str) -> str:
    """The queue as QUEUE.parquet and QUEUE.csv in `output` (a local folder)."""
    Path(output).mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame.to_parquet(Path(output, f"{QUEUE}.parquet"), index=False)
    frame.to_csv(Path(output, f"{QUEUE}.csv"), index=False)
    return str(Path(output, f"{QUEUE}.parquet"))


class RankUncertainty(beam.PTransform):
    """Embedded records with store context → `Routed`: candidates, and dead letters of failed batches."""

    def __init__(self, model_dir: str, max_batch_size: int = 256) -> None:
        super().__init__()
        self.handler = KeyedModelHandler(UncertaintyModelHandler(model_dir, max_batch_size))

    def expand(self, embedded: beam.PCollection) -> Routed:
        predictions, failures = (
            embedded
            | "KeyById" >> beam.WithKeys(lambda record: record["product_id"])
            | "RunInference" >> RunInference(self.handler).with_exception_handling()
        )
        dead = failures.failed_inferences | "FailedBatches" >> beam.FlatMap(
            failed_batch_dead_letters, stage=STAGE)
        return Routed(predictions | "ToCandidate" >> beam.ParDo(ToCandidateFn()), dead)


def _count_dead_letters(row: dict) -> dict:
    counter("review_dead_letters").inc()
    return row


def build(products: Routed, embed: beam.PTransform, context: StoreContext,
          rank: RankUncertainty, pick: PickQueueFn, output: str, run_id: str) -> None:
    """The graph: read products → deduplicate → embed → store context → rank → pick → write."""
    unique = products.records | "DeduplicateProducts" >> DeduplicateProducts(run_id)
    embedded = unique.records | "EmbedProducts" >> embed
    in_store = embedded.records | "StoreContext" >> context
    ranked = in_store.records | "RankUncertainty" >> rank
    _ = (ranked.records
         | "AllCandidates" >> beam.combiners.ToList()
         | "PickQueue" >> beam.ParDo(pick)
         | "WriteQueue" >> beam.Map(write_queue, output))
    _ = ((products.dead_letter, unique.dead_letter, embedded.dead_letter, in_store.dead_letter,
          ranked.dead_letter)
         | "MergeDeadLetters" >> beam.Flatten()
         | "CountDeadLetters" >> beam.Map(_count_dead_letters)
         | "WriteDeadLetters" >> WriteTable(f"{output}/dead_letters/part", "dead_letters"))


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> dict:
    """Build the review queue; returns the run summary (records in, candidates, dead letters, queued).

    Raises:
        RecordsLostError: records in ≠ candidates + dead letters (nothing may be lost).
        UsageError: missing flags or a budget below 1.
    """
    options = pipeline_options(argv, "linnet review-queue", ProductInputOptions, OutputOptions,
                               ModelOptions, ReviewQueueOptions, EmbeddingOptions, description=__doc__)
    flags, outputs = options.view_as(ReviewQueueOptions), options.view_as(OutputOptions)
    model = options.view_as(ModelOptions)
    require(model, "model")
    require(flags, "budget")
    require(outputs, "output")
    refuse_bigquery_input(options, "linnet review-queue")
    if flags.budget < 1 or (flags.per_store_cap is not None and flags.per_store_cap < 1):
        raise ValueError(f"--budget and --per_store_cap must be >= 1, got {flags.budget}, "
                         f"{flags.per_store_cap}")
    info = model_info(model.model)
    run_id = outputs.run_id or new_attempt()
    with published(outputs.output) as staging:
        pipeline = test_pipeline or beam.Pipeline(options=options)
        products = pipeline | "ReadProducts" >> product_source(options, run_id=run_id, optional_labels=True)
        context = StoreContext(model.model, int(info["store_context_width"]), run_id,
                               max_batch_size=model.max_batch_size)
        build(products, EmbedProducts.from_options(options, run_id, model_dir=model.model), context,
              RankUncertainty(model.model, model.max_batch_size),
              PickQueueFn(model.model, flags.budget, flags.per_store_cap), staging, run_id)
        result = pipeline.run()
        result.wait_until_finish()
    accounting = Accounting(records_in(result), committed(result, "review_candidates"),
                            committed(result, "review_dead_letters"))
    queued = len(pd.read_parquet(Path(outputs.output, f"{QUEUE}.parquet")))
    summary = {"run_id": run_id, "records_in": accounting.records_in, "candidates": accounting.records_out,
               "dead_letters": accounting.dead_letters, "queued": queued, "balanced": accounting.balanced}
    print(json.dumps(summary, indent=2))
    accounting.check(f"run {run_id}")
    return summary


def main(argv: list[str] | None = None) -> int:
    """`linnet review-queue` entry point."""
    run(argv)
    return 0
