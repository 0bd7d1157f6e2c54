"""Reading products and writing tables: the IO composites every LinNét pipeline shares.

`ReadProducts` turns JSONL or Parquet files into validated product records plus dead letters,
reading each file on its own so that one corrupt file (or row group) becomes dead letters, not a
failed job: whatever the bytes, every record in is one record or one dead letter out.
"""

from __future__ import annotations

import datetime as dt
import glob
import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import TaggedOutput

import schemas
from linnet_core.records import Reason, dead_letter, updated_on, validate
from linnet_core.training_data import choose_duplicate
from pipelines.counters import counter
from pipelines.dead_letters import DEAD_LETTER, Routed

LOGGER = logging.getLogger(__name__)
PRODUCTS = "products"
READ_STAGE = "read"
VALIDATE_STAGE = "validate"
DEDUPE_STAGE = "dedupe"
PARQUET_BATCH_ROWS = 1_000


def _is_parquet(path: str) -> bool:
    return path.endswith((".parquet", ".pq")) or "/part-" in path and not path.endswith((".jsonl", ".json"))


Checked = tuple[dict[str, Any] | None, dict[str, Any] | None]


def parquet_input_rows(file_pattern: str) -> int | None:
    """The records of the files `file_pattern` matches, from their Parquet footers (no data read);
    None when any file is not Parquet (a JSONL file would have to be read whole to count)."""
    patterns = [pattern.strip() for pattern in file_pattern.split(",") if pattern.strip()]
    files = [meta.path for result in FileSystems.match(patterns) for meta in result.metadata_list]
    if not files or not all(_is_parquet(path) for path in files):
        return None
    total = 0
    for path in files:
        with FileSystems.open(path) as handle:
            total += pq.ParquetFile(handle).metadata.num_rows
    return total


def check_inputs(file_pattern: str) -> list[str]:
    """The globs of `file_pattern` (comma-separated); local ones must match at least one file.

    Raises:
        IsADirectoryError, FileNotFoundError: with the pattern, for one clear line instead of a
            failure deep inside the job (object-store globs are matched by the job itself).
    """
    patterns = [pattern.strip() for pattern in file_pattern.split(",") if pattern.strip()]
    if not patterns:
        raise FileNotFoundError("--input is empty: give a JSONL or Parquet file or glob")
    for pattern in patterns:
        if "://" in pattern:
            continue
        if Path(pattern).is_dir():
            raise IsADirectoryError(f"--input {pattern} is a directory: give files, e.g. {pattern}/*.jsonl")
        if not any(Path(path).is_file() for path in glob.glob(pattern)):
            raise FileNotFoundError(f"--input {pattern} matches no file")
    return patterns


def read_product_file(open_file: Callable[[], BinaryIO], path: str, image_root: str | None = None,
                      run_id: str | None = None, optional_labels: bool = False) -> Iterator[Checked]:
    """Every record of one JSONL or Parquet file, checked (`records.validate`): exactly one
    (record, None) or (None, dead letter) per record the file holds, so records in = out + dead.

    A line that is not JSON is a dead letter. A Parquet row group that cannot be decoded gives one
    dead letter per row it held (the footer knows how many); a file whose footer cannot be read, or a
    JSONL file that cannot be read further, gives one dead letter for the file (or for its rest).
    """
    def check(raw: Any, where: str, source: Any = None) -> Checked:
        return validate(raw, image_root, run_id, optional_labels, source=source, where=where)

    def lost(error: Exception, raw: dict[str, Any], stage: str = READ_STAGE,
             reason: Reason = Reason.CORRUPT_FILE) -> Checked:
        return None, dead_letter(stage, reason, f"{path}: {type(error).__name__}: {error}", raw,
                                 run_id=run_id)

    if not _is_parquet(path):
        lines = _numbered_lines(open_file)
        number = 0
        while True:
            try:
                number, line = next(lines)
            except StopIteration:
                return
            except Exception as error:  # noqa: BLE001 - a truncated or unreadable file: its rest is lost
                LOGGER.warning("unreadable JSONL file %s after line %d: %s", path, number, error)
                yield lost(error, {"file": path, "after_line": number})
                return
            yield check(line, f"{path}:{number}")
    try:
        handle = open_file()
        parquet = pq.ParquetFile(handle)
    except Exception as error:  # noqa: BLE001 - no footer: the rows cannot be counted, the file is lost
        LOGGER.warning("unreadable Parquet file %s: %s", path, error)
        yield lost(error, {"file": path})
        return
    with handle:
        for group in range(parquet.num_row_groups):
            rows, done = parquet.metadata.row_group(group).num_rows, 0
            try:
                for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=[group]):
                    for row, error in _batch_rows(batch):
                        where = f"{path}: row group {group} row {done}"
                        done += 1
                        yield check(row, where) if error is None else lost(
                            error, {"file": path, "row_group": group, "row": done - 1}, VALIDATE_STAGE,
                            Reason.BAD_FIELD_TYPE)
            except Exception as error:  # noqa: BLE001 - a corrupt row group: each of its rows is lost
                LOGGER.warning("corrupt row group %d of %s (%d rows): %s", group, path, rows - done, error)
                for row in range(done, rows):
                    yield lost(error, {"file": path, "row_group": group, "row": row})


def _numbered_lines(open_file: Callable[[], BinaryIO]) -> Iterator[tuple[int, bytes]]:
    with open_file() as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, line


def _batch_rows(batch: Any) -> Iterator[tuple[dict[str, Any] | None, Exception | None]]:
    """The rows of a record batch as dicts; a row Python cannot hold (a timestamp past year 9999, say)
    comes with its error, and the batch's other rows still come."""
    try:
        yield from ((row, None) for row in batch.to_pylist())
        return
    except Exception:  # noqa: BLE001 - convert row by row to find the bad ones
        pass
    for index in range(batch.num_rows):
        try:
            yield batch.slice(index, 1).to_pylist()[0], None
        except Exception as error:  # noqa: BLE001 - this row cannot be converted
            yield None, error


class ValidateProductFn(beam.DoFn):
    """Checks one raw record (`linnet_core.records.validate`): the record, or a dead letter."""

    def __init__(self, image_root: str | None = None, run_id: str | None = None,
                 optional_labels: bool = False) -> None:
        self.image_root = image_root
        self.run_id = run_id
        self.optional_labels = optional_labels
        self.valid = counter("records_valid")
        self.invalid = counter("records_invalid")

    def process(self, raw: Any) -> Iterator[Any]:
        yield from self._route(*validate(raw, self.image_root, self.run_id, self.optional_labels))

    def _route(self, record: dict | None, dead: dict | None) -> Iterator[Any]:
        """A valid record on the main output, else its dead letter on `dead_letter`, counted."""
        if record is None:
            self.invalid.inc()
            yield TaggedOutput(DEAD_LETTER, dead)
            return
        self.valid.inc()
        yield record


class ReadProductFilesFn(ValidateProductFn):
    """One matched file → its products and dead letters (`read_product_file`), counted."""

    def __init__(self, image_root: str | None = None, run_id: str | None = None,
                 optional_labels: bool = False) -> None:
        super().__init__(image_root, run_id, optional_labels)
        self.records_read = counter("records_read")

    def process(self, readable: fileio.ReadableFile) -> Iterator[Any]:
        for record, dead in read_product_file(readable.open, readable.metadata.path, self.image_root,
                                              self.run_id, self.optional_labels):
            self.records_read.inc()
            yield from self._route(record, dead)


class KeepDayFn(beam.DoFn):
    """Keeps the records updated on one day (the products of that day's partition)."""

    def __init__(self, day: dt.date) -> None:
        self.day = day
        self.other_days = counter("records_other_days")

    def process(self, record: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if updated_on(record, self.day):
            yield record
        else:
            self.other_days.inc()


class ReadProducts(beam.PTransform):
    """Files matching `file_pattern` (JSONL or Parquet) → `Routed`: the valid products and dead letters.

    Each file is read and checked in one step, so no raw record (which may hold anything) crosses a
    Beam coder; the clean records are then spread over workers.

    Args:
        file_pattern: a glob (local or gs://) or a comma-separated list of globs; local ones must match.
        image_root: relative image paths are resolved against it.
        day: when given, keep only products whose `updated_at` falls on that day (UTC); the others
            are counted (`records_other_days`), not dead letters: they belong to other partitions.
        run_id: recorded in the dead letters.
        optional_labels: a bad label is dropped instead of making a dead letter (scoring).
    """

    def __init__(self, file_pattern: str, image_root: str | None = None, day: dt.date | None = None,
                 run_id: str | None = None, optional_labels: bool = False) -> None:
        super().__init__()
        self.patterns = check_inputs(file_pattern)
        self.read_fn = ReadProductFilesFn(image_root, run_id, optional_labels)
        self.day = day

    def expand(self, pbegin: beam.pvalue.PBegin) -> Routed:
        read = (
            pbegin
            | "Patterns" >> beam.Create(self.patterns)
            | "MatchFiles" >> fileio.MatchAll(fileio.EmptyMatchTreatment.DISALLOW)
            | "ReadMatches" >> fileio.ReadMatches()
            | "ReadAndValidate" >> beam.ParDo(self.read_fn).with_outputs(DEAD_LETTER, main=PRODUCTS)
        )
        products = read[PRODUCTS] | "Reshuffle" >> beam.Reshuffle()
        if self.day is not None:
            products = products | "OnDay" >> beam.ParDo(KeepDayFn(self.day))
        return Routed(products, read[DEAD_LETTER])


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
        self.duplicates = counter("duplicates_superseded")

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
    """One record per product_id (the newest wins) → `Routed`: the kept records, and dead letters of
    the superseded ones."""

    def __init__(self, run_id: str | None = None) -> None:
        super().__init__()
        self.run_id = run_id

    def expand(self, products: beam.PCollection) -> Routed:
        kept = (
            products
            | "KeyByProductId" >> beam.WithKeys(_product_id)
            | "GroupByProductId" >> beam.GroupByKey()
            | "KeepNewest" >> beam.ParDo(KeepNewestFn(self.run_id)).with_outputs(DEAD_LETTER, main=PRODUCTS)
        )
        return Routed(kept[PRODUCTS], kept[DEAD_LETTER])
