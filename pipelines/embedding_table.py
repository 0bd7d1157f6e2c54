"""The embedding table: (encoder id, content hash) → vector, as Parquet parts on any Beam filesystem.

    products ─ ContentKeys (hash both texts; read the first readable photo's bytes and hash them)
       │          └─ (hash, product_id) ─┐
       │   ReadEmbeddingTable: (hash, (encoder id, vector)) ─ CoGroupByKey(hash) → what each product has
       └──────────────────────────────── CoGroupByKey(product_id) → (record, Stored) for the encoders

Only content the table lacks reaches the encoders; a photo whose bytes hash to a stored vector is
neither decoded nor encoded (its bytes are read once, to key it). A run appends what it embedded as a
new part: written under DIR/_staging/<attempt>/, then each file renamed to DIR/part-<attempt>-*.parquet,
so readers (which glob DIR/part-*.parquet) never see a partial part. The table is a set of facts: any
subset of parts is consistent, so a run killed between renames loses only the work of the parts it did
not publish, and two runs that embed the same content append duplicates the join collapses.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import ReadFromParquet, WriteToParquet

import schemas
from linnet_core.encoders.embedder import ContentKeys, Stored, content_keys
from pipelines.counters import counter
from pipelines.partitions import delete_folder, new_attempt, parquet_rows

SCHEMA = "embedding_table"
PART_PREFIX = "part-"
STAGING = "_staging"


def parts_pattern(directory: str) -> str:
    """The glob of the table's published parts."""
    return FileSystems.join(directory, f"{PART_PREFIX}*.parquet")


def table_row(encoder_id: str, key: str, vector: np.ndarray, run_id: str, created_at: dt.datetime) -> dict:
    """One row of the table (schemas/embedding_table.json)."""
    return {"encoder_id": encoder_id, "content_hash": key, "vector": np.asarray(vector, "<f4").tobytes(),
            "run_id": run_id, "created_at": created_at}


def keyed_by_hash(row: dict) -> tuple[str, tuple[str, np.ndarray]]:
    """A table row as the join takes it: (content hash, (encoder id, vector))."""
    return row["content_hash"], (row["encoder_id"], np.frombuffer(row["vector"], dtype="<f4").copy())


class ContentKeysFn(beam.DoFn):
    """(product_id, record) → (product_id, (record, ContentKeys)); reads the photo bytes it keys."""

    def __init__(self, read: Callable[[str], bytes]) -> None:
        self.read = read

    def process(self, keyed: tuple[str, dict]) -> Iterator[tuple[str, tuple[dict, ContentKeys]]]:
        product_id, record = keyed
        yield product_id, (record, content_keys(record, self.read))


def _wanted(keyed: tuple[str, tuple[dict, ContentKeys]]) -> Iterator[tuple[str, str]]:
    product_id, (_, keys) = keyed
    for key in set(keys.hashes()):
        yield key, product_id


def _found(joined: tuple[str, dict[str, list]]) -> Iterator[tuple[str, tuple[str, dict]]]:
    """A content hash the table holds → (product_id, (hash, {encoder id: vector})) per product wanting it."""
    key, grouped = joined
    if not grouped["stored"]:
        return
    vectors = dict(grouped["stored"])
    for product_id in set(grouped["wanted"]):
        yield product_id, (key, vectors)


def _with_stored(joined: tuple[str, dict[str, list]]) -> Iterator[tuple[str, tuple[dict, Stored]]]:
    product_id, grouped = joined
    found = dict(grouped["found"])
    for record, keys in grouped["products"]:
        yield product_id, (record, Stored(keys, {key: found[key] for key in keys.hashes() if key in found}))


class ReadEmbeddingTable(beam.PTransform):
    """The table's published parts → (content hash, (encoder id, vector)); nothing before the first run."""

    def __init__(self, directory: str) -> None:
        super().__init__()
        self.directory = directory

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        pattern = parts_pattern(self.directory)
        if not FileSystems.match([pattern])[0].metadata_list:
            return pbegin | "NoParts" >> beam.Create([])
        return (pbegin
                | "ReadParts" >> ReadFromParquet(pattern, columns=["encoder_id", "content_hash", "vector"])
                | "ByHash" >> beam.Map(keyed_by_hash))


class LookUpEmbeddings(beam.PTransform):
    """(product_id, record) → (product_id, (record, Stored)): each record with the vectors the table
    holds for its content (a join by content hash, then by product id; no side input)."""

    def __init__(self, directory: str, read: Callable[[str], bytes]) -> None:
        super().__init__()
        self.directory = directory
        self.read = read

    def expand(self, keyed: beam.PCollection) -> beam.PCollection:
        with_keys = keyed | "ContentKeys" >> beam.ParDo(ContentKeysFn(self.read))
        wanted = with_keys | "Wanted" >> beam.FlatMap(_wanted)
        stored = keyed.pipeline | "ReadEmbeddingTable" >> ReadEmbeddingTable(self.directory)
        found = ({"wanted": wanted, "stored": stored} | "JoinTable" >> beam.CoGroupByKey()
                 | "Found" >> beam.FlatMap(_found))
        return ({"products": with_keys, "found": found} | "JoinProducts" >> beam.CoGroupByKey()
                | "WithStored" >> beam.FlatMap(_with_stored))


class PublishPartsFn(beam.DoFn):
    """Once every staged file is written: rename the non-empty ones into the table, drop the staging."""

    def __init__(self, directory: str, attempt: str) -> None:
        self.directory = directory
        self.attempt = attempt
        self.appended = counter("table_vectors_appended")

    def process(self, written: list[str]) -> Iterator[int]:
        staged = [path for path in sorted(written) if parquet_rows(path) > 0]
        rows = sum(map(parquet_rows, staged))
        targets = [FileSystems.join(self.directory, f"{PART_PREFIX}{self.attempt}-{i:05d}.parquet")
                   for i in range(len(staged))]
        if staged:
            FileSystems.rename(staged, targets)
        delete_folder(FileSystems.join(self.directory, STAGING, self.attempt))
        self.appended.inc(rows)
        yield rows


def _one_per_key(grouped: tuple[tuple[str, str], Iterable[np.ndarray]]) -> tuple[str, str, np.ndarray]:
    (encoder_id, key), vectors = grouped
    return encoder_id, key, next(iter(vectors))


class AppendToEmbeddingTable(beam.PTransform):
    """(encoder id, content hash, vector) → one new part of the table (each content once), named by a
    fresh attempt token so no two runs' parts collide; rows carry `run_id`."""

    def __init__(self, directory: str, run_id: str | None) -> None:
        super().__init__()
        self.directory = directory
        self.attempt = new_attempt()
        self.run_id = run_id or self.attempt

    def expand(self, vectors: beam.PCollection) -> beam.PCollection:
        created_at, run_id = dt.datetime.now(dt.UTC), self.run_id
        written = (vectors
                   | "ByContent" >> beam.MapTuple(lambda encoder_id, key, vector: ((encoder_id, key), vector))
                   | "GroupContent" >> beam.GroupByKey()
                   | "OnePerContent" >> beam.Map(_one_per_key)
                   | "ToRows" >> beam.MapTuple(
                       lambda encoder_id, key, vector: table_row(encoder_id, key, vector, run_id, created_at))
                   | "WriteStaged" >> WriteToParquet(
                       FileSystems.join(self.directory, STAGING, self.attempt, "part"),
                       schemas.arrow_schema(SCHEMA), file_name_suffix=".parquet"))
        return (written | "AllStaged" >> beam.combiners.ToList()
                | "Publish" >> beam.ParDo(PublishPartsFn(self.directory, self.attempt)))
