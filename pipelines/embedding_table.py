"""The embedding table: (encoder id, content hash) → vector, as Parquet parts on any Beam filesystem.

    products ─ ContentKeys (hash both texts; read the first readable photo's bytes and hash them)
       │          └─ (hash, product_id) ─┐
       │   ReadEmbeddingTable: (hash, (encoder id, vector)) ─ CoGroupByKey(hash) → what each product has
       └──────────────────────────────── CoGroupByKey(product_id) → (record, Stored) for the encoders

Only content the table lacks reaches the encoders; a photo whose bytes hash to a stored vector is
neither decoded nor encoded (its bytes are read once, to key it). A run appends what it embedded as a
new partition `DIR/vectors/run=<token>/`, staged and committed like the categorized tables
(`pipelines.partitions.WritePartition`: locally the staged folder is renamed in, on gs:// the files are
copied in and the `_SUCCESS` manifest written last), and readers take only the files the manifests
name (`committed_names`), so they never see a partial append. The table is a set of facts: any subset
of appends is consistent, so a run killed before its commit loses only its own work, and two runs that
embed the same content append duplicates the join collapses. Tables written before appends were
partitions hold parts `DIR/part-*.parquet`; those are still read.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import ReadAllFromParquet

from linnet_core.encoders.embedder import ContentKeys, Stored, content_keys
from pipelines.counters import counter
from pipelines.partitions import DATA_SUFFIX, Partition, WritePartition, committed_names, new_attempt

SCHEMA = "embedding_table"
TABLE = "vectors"  # the partitioned table under DIR; DIR also holds the commit journal (`_commits`)
LEGACY_PARTS = "part-*.parquet"  # what appends wrote into DIR itself before they were partitions


def table_files(directory: str) -> list[str]:
    """The data files of the table in DIR: those of every committed append, and any legacy parts."""
    root = FileSystems.join(directory, TABLE)
    legacy = FileSystems.match([FileSystems.join(directory, LEGACY_PARTS)])[0].metadata_list
    return sorted(meta.path for meta in legacy) + [
        FileSystems.join(root, name) for name in committed_names(root) if name.endswith(DATA_SUFFIX)]


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
    """The table's committed files → (content hash, (encoder id, vector)); nothing before the first run.
    The files are listed when the pipeline runs, not when it is built."""

    def __init__(self, directory: str) -> None:
        super().__init__()
        self.directory = directory

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (pbegin
                | "Table" >> beam.Create([self.directory])
                | "CommittedFiles" >> beam.FlatMap(table_files)
                | "ReadFiles" >> ReadAllFromParquet(columns=["encoder_id", "content_hash", "vector"])
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


class CountAppendedFn(beam.DoFn):
    """Counts the rows of the committed append (its manifest), which it passes on."""

    def __init__(self) -> None:
        self.appended = counter("table_vectors_appended")

    def process(self, manifest: dict) -> Iterator[dict]:
        self.appended.inc(manifest["rows"])
        yield manifest


def _one_per_key(grouped: tuple[tuple[str, str], Iterable[np.ndarray]]) -> tuple[str, str, np.ndarray]:
    (encoder_id, key), vectors = grouped
    return encoder_id, key, next(iter(vectors))


class AppendToEmbeddingTable(beam.PTransform):
    """(encoder id, content hash, vector) → one new committed partition of the table (each content once;
    none when there is nothing to append), named by a fresh token so no two runs' appends collide; rows
    carry `run_id`. Outputs the partition's manifest."""

    def __init__(self, directory: str, run_id: str | None) -> None:
        super().__init__()
        self.directory = directory
        self.partition = Partition("run", new_attempt())
        self.run_id = run_id or self.partition.value

    def expand(self, vectors: beam.PCollection) -> beam.PCollection:
        created_at, run_id = dt.datetime.now(dt.UTC), self.run_id
        return (vectors
                | "ByContent" >> beam.MapTuple(lambda encoder_id, key, vector: ((encoder_id, key), vector))
                | "GroupContent" >> beam.GroupByKey()
                | "OnePerContent" >> beam.Map(_one_per_key)
                | "ToRows" >> beam.MapTuple(
                    lambda encoder_id, key, vector: table_row(encoder_id, key, vector, run_id, created_at))
                | "Commit" >> WritePartition(self.directory, TABLE, self.partition, run_id, schema=SCHEMA,
                                             commit_empty=False)
                | "Appended" >> beam.ParDo(CountAppendedFn()))
