"""Reading products and writing tables: the IO composites every LinNét pipeline shares.

`ReadProducts` turns JSONL or Parquet files into validated product records plus dead letters,
reading each file on its own so that one corrupt file becomes dead letters, not a failed job.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io import fileio
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput

import schemas
from linnet_core.records import Reason, RecordError, dead_letter, normalize, updated_on
from linnet_core.training_data import choose_duplicate

LOGGER = logging.getLogger(__name__)
PRODUCTS = "products"
DEAD_LETTER = "dead_letter"
READ_STAGE = "read"
VALIDATE_STAGE = "validate"
DEDUPE_STAGE = "dedupe"
PARQUET_BATCH_ROWS = 1_000


def _is_parquet(path: str) -> bool:
    return path.endswith((".parquet", ".pq")) or "/part-" in path and not path.endswith((".jsonl", ".json"))


class ParseProductFilesFn(beam.DoFn):
    """Yields raw records of one readable file (JSONL lines or Parquet rows), or a dead letter.

    A line that is not JSON becomes a dead letter; an unreadable Parquet file becomes one dead letter
    naming the file (its rows cannot be counted, so the file itself is the lost record).
    """

    def __init__(self) -> None:
        self.records_read = Metrics.counter("linnet", "records_read")
        self.bad_files = Metrics.counter("linnet", "unreadable_files")

    def process(self, readable: fileio.ReadableFile) -> Iterator[Any]:
        path = readable.metadata.path
        if _is_parquet(path):
            yield from self._parquet(readable, path)
        else:
            yield from self._jsonl(readable, path)

    def _jsonl(self, readable: fileio.ReadableFile, path: str) -> Iterator[Any]:
        with readable.open() as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                self.records_read.inc()
                try:
                    yield json.loads(line.decode("utf-8", errors="replace"))
                except json.JSONDecodeError as error:
                    yield TaggedOutput(DEAD_LETTER, dead_letter(
                        READ_STAGE, Reason.INVALID_JSON, f"{path}:{number}: {error}", line))

    def _parquet(self, readable: fileio.ReadableFile, path: str) -> Iterator[Any]:
        try:
            with readable.open() as handle:
                parquet = pq.ParquetFile(handle)
                for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
                    for row in batch.to_pylist():
                        self.records_read.inc()
                        yield row
        except Exception as error:  # noqa: BLE001 - any decode failure of a file is a dead letter
            self.bad_files.inc()
            self.records_read.inc()
            LOGGER.warning("unreadable Parquet file %s: %s", path, error)
            yield TaggedOutput(DEAD_LETTER, dead_letter(
                READ_STAGE, Reason.CORRUPT_FILE, f"{path}: {type(error).__name__}: {error}", {"file": path}))


class ValidateProductFn(beam.DoFn):
    """Normalizes one raw record (`linnet_core.records.normalize`) or routes it to the dead letters."""

    def __init__(self, image_root: str | None = None) -> None:
        self.image_root = image_root
        self.valid = Metrics.counter("linnet", "records_valid")
        self.invalid = Metrics.counter("linnet", "records_invalid")

    def process(self, raw: Any) -> Iterator[Any]:
        try:
            record = normalize(raw, self.image_root)
        except RecordError as error:
            self.invalid.inc()
            yield TaggedOutput(DEAD_LETTER, dead_letter(VALIDATE_STAGE, error.reason, str(error), raw))
            return
        self.valid.inc()
        yield record


class KeepDayFn(beam.DoFn):
    """Keeps the records updated on one day (the products of that day's partition)."""

    def __init__(self, day: dt.date) -> None:
        self.day = day
        self.other_days = Metrics.counter("linnet", "records_other_days")

    def process(self, record: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if updated_on(record, self.day):
            yield record
        else:
            self.other_days.inc()


class ReadProducts(beam.PTransform):
    """Files matching `file_pattern` (JSONL or Parquet) → tagged `products` and `dead_letter`.

    Args:
        file_pattern: a glob (local or gs://) or a comma-separated list of globs.
        image_root: relative image paths are resolved against it.
        day: when given, keep only products whose `updated_at` falls on that day (UTC); the others
            are counted (`records_other_days`), not dead letters: they belong to other partitions.
    """

    def __init__(self, file_pattern: str, image_root: str | None = None, day: dt.date | None = None) -> None:
        super().__init__()
        self.patterns = [pattern.strip() for pattern in file_pattern.split(",") if pattern.strip()]
        self.image_root = image_root
        self.day = day

    def expand(self, pbegin: beam.pvalue.PBegin) -> dict[str, beam.PCollection]:
        parsed = (
            pbegin
            | "Patterns" >> beam.Create(self.patterns)
            | "MatchFiles" >> fileio.MatchAll(fileio.EmptyMatchTreatment.DISALLOW)
            | "ReadMatches" >> fileio.ReadMatches()
            | "ParseFiles" >> beam.ParDo(ParseProductFilesFn()).with_outputs(DEAD_LETTER, main="raw")
        )
        validated = (
            parsed.raw
            | "Reshuffle" >> beam.Reshuffle()
            | "Validate" >> beam.ParDo(ValidateProductFn(self.image_root)).with_outputs(
                DEAD_LETTER, main=PRODUCTS)
        )
        dead = (parsed[DEAD_LETTER], validated[DEAD_LETTER]) | "MergeDeadLetters" >> beam.Flatten()
        products = validated[PRODUCTS]
        if self.day is not None:
            products = products | "OnDay" >> beam.ParDo(KeepDayFn(self.day))
        return {PRODUCTS: products, DEAD_LETTER: dead}


def to_row(record: dict[str, Any], table: str) -> dict[str, Any]:
    """Keep exactly the columns of table schema `table`, missing ones as None (lists as [])."""
    row = {}
    for field in schemas.load(table):
        value = record.get(field["name"])
        if field.get("mode") == "REPEATED":
            value = [] if value is None else list(value)
        row[field["name"]] = value
    return row


class WriteTable(beam.PTransform):
    """Writes rows as Parquet files `<prefix>-SSSSS-of-NNNNN.parquet` in the schema of `table`."""

    def __init__(self, file_prefix: str, table: str, num_shards: int = 0) -> None:
        super().__init__()
        self.file_prefix = file_prefix
        self.table = table
        self.num_shards = num_shards

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        return (
            rows
            | "ToRow" >> beam.Map(to_row, self.table)
            | "WriteParquet" >> beam.io.WriteToParquet(
                self.file_prefix, schemas.arrow_schema(self.table), file_name_suffix=".parquet",
                num_shards=self.num_shards)
        )


def _product_id(record: dict[str, Any]) -> str:
    return record["product_id"]


class KeepNewestFn(beam.DoFn):
    """Of the records sharing a product_id keeps the newest (`training_data.choose_duplicate`: latest
    `updated_at`, ties broken by content so reruns agree); the others become dead letters."""

    def __init__(self, run_id: str | None = None) -> None:
        self.run_id = run_id
        self.duplicates = Metrics.counter("linnet", "duplicates_superseded")

    def process(self, element: tuple[str, Iterable[dict[str, Any]]]) -> Iterator[Any]:
        product_id, records = element
        records = list(records)
        newest, stale = choose_duplicate(records)
        yield newest
        for record in stale:
            self.duplicates.inc()
            yield TaggedOutput(DEAD_LETTER, dead_letter(
                DEDUPE_STAGE, Reason.DUPLICATE_PRODUCT_ID,
                f"product_id {product_id} occurs {len(records)} times; kept the one updated at "
                f"{newest.get('updated_at')}", record, run_id=self.run_id))


class DeduplicateProducts(beam.PTransform):
    """One record per product_id (the newest wins); superseded records to tagged `dead_letter`."""

    def __init__(self, run_id: str | None = None) -> None:
        super().__init__()
        self.run_id = run_id

    def expand(self, products: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return (
            products
            | "KeyByProductId" >> beam.WithKeys(_product_id)
            | "GroupByProductId" >> beam.GroupByKey()
            | "KeepNewest" >> beam.ParDo(KeepNewestFn(self.run_id)).with_outputs(DEAD_LETTER, main=PRODUCTS)
        )
