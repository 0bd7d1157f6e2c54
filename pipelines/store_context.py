"""Merchant context in scoring: every product sees what its store's other products say.

    embedded ─ FirstPass (RunInference: the model's `store_evidence`) ─┬─ members: (product_id, contribution)
                                                                       │   [+ the stored members of earlier
                                                                       │    runs, --store_context DIR; this
                                                                       │    run's products replace theirs]
                                                                       │   → CombinePerKey(store): sum, count
                                                                       └─ CoGroupByKey(store) → each product
                                                                          with `store_context`, the mean of
                                                                          its store-mates' contributions

The combiner holds one vector per store (bounded for a store of a million products); a store of one
gives no context. With `--store_context DIR` the members table (one row per product) and the store
table (one row per store) are written as a new version under DIR/versions/<run_id>/ and published by
writing DIR/CURRENT last (`pipelines.publish`), so a nightly run that scores a few changed products of a
big store still sees the whole store, and a failed run leaves the previous version in place.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import ReadFromParquet, WriteToParquet
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference

import schemas
from linnet_core.features import MODEL_INPUTS
from linnet_core.store_context import StoreTable, leave_one_out
from pipelines.dead_letters import Routed
from pipelines.embed import failed_batch_dead_letters, local_copy, read_uri
from pipelines.publish import current_version, publish, version_dir

LOGGER = logging.getLogger(__name__)
STORE_CONTEXT = "store_context"  # the record field the categorize stage feeds the model
CONTEXT_STAGE = "store_context"
MEMBERS, STORES = "members", "stores"
MEMBERS_SCHEMA, STORES_SCHEMA = "store_context_members", "store_context"


def load_predictor(model_dir: str, batch_size: int) -> Any:
    """The model as both scoring handlers load it on a worker: the SavedModel and its two JSON files,
    copied from a remote folder first (TensorFlow loads on workers only)."""
    from linnet_core.model import CALIBRATION_JSON, LEGACY_CALIBRATION_JSON, MODEL_JSON
    from linnet_core.model.export import SAVED_MODEL
    from linnet_core.model.predictor import Predictor

    local = local_copy(model_dir, only=(SAVED_MODEL, MODEL_JSON, CALIBRATION_JSON, LEGACY_CALIBRATION_JSON))
    return Predictor(local, batch_size=batch_size)


def model_info(model_dir: str) -> dict:
    """MODEL/model.json through FileSystems (local or gs://).

    Raises:
        ValueError: the folder is no model directory.
    """
    from linnet_core.model import MODEL_JSON

    try:
        return json.loads(read_uri(FileSystems.join(model_dir, MODEL_JSON)))
    except FileNotFoundError:
        raise ValueError(f"--model {model_dir} is not a model directory: it has no {MODEL_JSON}") from None


class SavedModelHandler(ModelHandler[dict, Any, Any]):
    """What both scoring handlers share: the model loaded once per worker process, batches of embedded
    product records stacked into the model's inputs."""

    def __init__(self, model_dir: str, max_batch_size: int = 256) -> None:
        super().__init__()
        self.model_dir = model_dir
        self.max_batch_size = max_batch_size

    def load_model(self) -> Any:
        return load_predictor(self.model_dir, self.max_batch_size)

    @staticmethod
    def inputs(batch: Sequence[dict]) -> dict[str, np.ndarray]:
        """The model inputs (features.MODEL_INPUTS) of a batch of embedded records."""
        return {name: np.stack([np.asarray(record[name], np.float32) for record in batch])
                for name in MODEL_INPUTS}

    def batch_elements_kwargs(self) -> dict[str, int]:
        return {"min_batch_size": 1, "max_batch_size": self.max_batch_size}


class StoreEvidenceHandler(SavedModelHandler):
    """RunInference handler for the SavedModel's first pass: a product record → its contribution."""

    def run_inference(self, batch: Sequence[dict], model: Any,
                      inference_args: dict | None = None) -> Iterable[PredictionResult]:
        for record, contribution in zip(batch, model.store_evidence(self.inputs(batch)), strict=True):
            yield PredictionResult(record, contribution, model_id=model.model_version)

    def get_metrics_namespace(self) -> str:
        return "linnet_store_context"


class SumContributions(beam.CombineFn):
    """(sum of contributions, count) of one store: a fixed-size accumulator whatever the store's size."""

    def create_accumulator(self) -> tuple[np.ndarray | None, int]:
        return None, 0

    def add_input(self, accumulator: tuple[np.ndarray | None, int], contribution: np.ndarray
                  ) -> tuple[np.ndarray, int]:
        total, count = accumulator
        contribution = np.asarray(contribution, np.float64)
        return (contribution.copy() if total is None else total + contribution), count + 1

    def merge_accumulators(self, accumulators: Iterable[tuple[np.ndarray | None, int]]
                           ) -> tuple[np.ndarray | None, int]:
        total, count = None, 0
        for part, n in accumulators:
            if part is not None:
                total = part.copy() if total is None else total + part
            count += n
        return total, count

    def extract_output(self, accumulator: tuple[np.ndarray | None, int]) -> tuple[np.ndarray | None, int]:
        return accumulator


def sparse(vector: np.ndarray) -> tuple[list[int], list[float]]:
    """Non-zero positions and values of a contribution (its table form)."""
    index = np.flatnonzero(vector)
    return index.tolist(), np.asarray(vector)[index].astype(float).tolist()


def dense(indices: Sequence[int], values: Sequence[float], width: int, dtype: type = np.float32
          ) -> np.ndarray:
    vector = np.zeros(width, dtype)
    vector[np.asarray(indices, np.int64)] = np.asarray(values, dtype)
    return vector


def attach_context(element: tuple[str, dict[str, list]]) -> Iterator[dict]:
    """A store's products, each with the mean contribution of its store-mates as `store_context`."""
    _, grouped = element
    (total, count), = grouped[STORES] or [(None, 0)]
    for record, own in grouped["products"]:
        context = (leave_one_out(total[None, :], np.array([count]), own[None, :])[0] if total is not None
                   else np.zeros_like(own))
        yield {**record, STORE_CONTEXT: context}


def _latest(element: tuple[str, dict[str, list]]) -> Iterator[tuple[str, np.ndarray]]:
    """A product's member row: this run's contribution, else the stored one."""
    _, grouped = element
    yield from grouped["now"][:1] or grouped["before"][:1]


class PublishVersion(beam.DoFn):
    """Write DIR/CURRENT (the published version's run id) once the version's tables are written."""

    def __init__(self, directory: str, run_id: str) -> None:
        self.directory = directory
        self.run_id = run_id

    def process(self, _: Any) -> Iterator[str]:
        publish(self.directory, self.run_id)
        yield self.run_id


def _table_path(directory: str, run_id: str, table: str) -> str:
    return FileSystems.join(version_dir(directory, run_id), table)


def _read_rows(directory: str, version: str, table: str) -> Iterator[dict]:
    """The rows of one table of a published version, through FileSystems (local or gs://)."""
    import pyarrow.parquet as pq

    pattern = f"{_table_path(directory, version, table)}/*.parquet"
    for metadata in FileSystems.match([pattern])[0].metadata_list:
        with FileSystems.open(metadata.path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            yield from pq.read_table(handle).to_pylist()


def read_store_table(directory: str, width: int) -> StoreTable:
    """The published version of the store-context tables in DIR, in memory (the online service's view of
    what the nightly run wrote); an empty table before the first publish."""
    version = current_version(directory)
    if version is None:
        return StoreTable()
    sums, counts = {}, {}
    for row in _read_rows(directory, version, STORES):
        sums[row["store"]] = dense(row["indices"], row["values"], width, np.float64)
        counts[row["store"]] = int(row["products"])
    members = {row["product_id"]: (row["store"], dense(row["indices"], row["values"], width))
               for row in _read_rows(directory, version, MEMBERS)}
    return StoreTable(sums, counts, members, version)


class StoreContext(beam.PTransform):
    """Embedded records → `Routed`: the same records with `store_context`, and dead letters of
    first-pass batches that failed.

    Args:
        model_dir: the model directory, local or gs://.
        width: the model's store-context width (its metadata `store_context_width`).
        directory: where the store-context tables live (None: this run's products only, nothing kept).
        lineage: model_version and thresholds_version of the member rows.
    """

    def __init__(self, model_dir: str, width: int, run_id: str, directory: str | None = None,
                 lineage: dict[str, str] | None = None, max_batch_size: int = 256) -> None:
        super().__init__()
        self.handler = KeyedModelHandler(StoreEvidenceHandler(model_dir, max_batch_size))
        self.width = width
        self.run_id = run_id
        self.directory = directory
        self.lineage = lineage or {}

    def expand(self, embedded: beam.PCollection) -> Routed:
        predictions, failures = (
            embedded
            | "KeyById" >> beam.WithKeys(lambda record: record["product_id"])
            | "FirstPass" >> RunInference(self.handler).with_exception_handling()
        )
        scored = predictions | "Contribution" >> beam.MapTuple(
            lambda product_id, result: (product_id, (result.example,
                                                     np.asarray(result.inference, np.float32))))
        with_store = scored | "HasStore" >> beam.Filter(lambda kv: bool(kv[1][0].get("store")))
        without_store = (scored | "NoStore" >> beam.Filter(lambda kv: not kv[1][0].get("store"))
                         | "NoContext" >> beam.MapTuple(
                             lambda _, pair: {**pair[0], STORE_CONTEXT: np.zeros(self.width, np.float32)}))
        members = with_store | "Member" >> beam.MapTuple(
            lambda product_id, pair: (product_id, (pair[0]["store"], pair[1])))
        if self.directory is not None:
            members = self._merge_stored(members)
        sums = (members | "ByStore" >> beam.Map(lambda kv: kv[1])
                | "SumPerStore" >> beam.CombinePerKey(SumContributions()))
        products = with_store | "ProductsByStore" >> beam.Map(lambda kv: (kv[1][0]["store"], kv[1]))
        joined = (({"products": products, STORES: sums} | "JoinStore" >> beam.CoGroupByKey())
                  | "AttachContext" >> beam.FlatMap(attach_context))
        if self.directory is not None:
            self._write(members, sums)
        dead = failures.failed_inferences | "FailedBatches" >> beam.FlatMap(
            failed_batch_dead_letters, stage=CONTEXT_STAGE)
        return Routed((joined, without_store) | "AllProducts" >> beam.Flatten(), dead)

    def _merge_stored(self, members: beam.PCollection) -> beam.PCollection:
        version = current_version(self.directory)
        if version is None:
            return members
        width = self.width
        stored = (members.pipeline
                  | "ReadMembers" >> ReadFromParquet(
                      f"{_table_path(self.directory, version, MEMBERS)}/*.parquet")
                  | "StoredMember" >> beam.Map(lambda row: (row["product_id"], (
                      row["store"], dense(row["indices"], row["values"], width)))))
        return ({"now": members, "before": stored} | "JoinMembers" >> beam.CoGroupByKey()
                | "Latest" >> beam.FlatMap(lambda kv: ((kv[0], member) for member in _latest(kv))))

    def _write(self, members: beam.PCollection, sums: beam.PCollection) -> None:
        stamp = {"run_id": self.run_id, "updated_at": dt.datetime.now(dt.UTC)}
        lineage = {"model_version": self.lineage.get("model_version", ""),
                   "thresholds_version": self.lineage.get("thresholds_version", ""), **stamp}

        def member_row(kv: tuple[str, tuple[str, np.ndarray]]) -> dict:
            product_id, (store, contribution) = kv
            indices, values = sparse(contribution)
            return {"store": store, "product_id": product_id, "indices": indices, "values": values, **lineage}

        def store_row(kv: tuple[str, tuple[np.ndarray, int]]) -> dict:
            store, (total, count) = kv
            indices, values = sparse(total)
            return {"store": store, "products": count, "indices": indices, "values": values, **stamp}

        written = []
        for name, rows, to_row, schema in ((MEMBERS, members, member_row, MEMBERS_SCHEMA),
                                           (STORES, sums, store_row, STORES_SCHEMA)):
            written.append(
                rows | f"{name.title()}Rows" >> beam.Map(to_row)
                | f"Write{name.title()}" >> WriteToParquet(
                    f"{_table_path(self.directory, self.run_id, name)}/part", schemas.arrow_schema(schema),
                    file_name_suffix=".parquet"))
        _ = (written | "Written" >> beam.Flatten()
             | "OneSignal" >> beam.combiners.Count.Globally()
             | "Publish" >> beam.ParDo(PublishVersion(self.directory, self.run_id)))
