"""Atomic partition commits for file tables: `ROOT/TABLE/date=YYYY-MM-DD/` (or `run=<id>/`).

A run writes its files under `ROOT/TABLE/_staging/`, then commits them as the partition: a rerun
replaces the partition (never adds to it) and a run that fails before the commit leaves nothing
visible. Every committed partition holds a `_SUCCESS` manifest naming its files and row counts.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.localfilesystem import LocalFileSystem
from apache_beam.metrics import Metrics

from linnet_core.records import day_bounds, updated_on  # noqa: F401 - part of this module's API
from pipelines.io import WriteTable

LOGGER = logging.getLogger(__name__)
MANIFEST = "_SUCCESS"
STAGING = "_staging"
TRASH = "_trash"
DATA_SUFFIX = ".parquet"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class Partition:
    """One output partition: a logical date (`date=2026-11-24`) or a run (`run=nightly-42`)."""

    key: str
    value: str

    def __post_init__(self) -> None:
        if self.key == "date":
            dt.date.fromisoformat(self.value)
        elif self.key != "run" or not _RUN_ID.match(self.value):
            raise ValueError(f"bad partition {self.key}={self.value!r}: expected date=YYYY-MM-DD or "
                             "run=<letters, digits, _ . ->")

    @classmethod
    def parse(cls, text: str) -> Partition:
        """`2026-11-24`, `date=2026-11-24` or `run=<id>`; a bare value that is no date is a run id.

        Raises:
            ValueError: an impossible date, or a run id with characters unsafe in a path.
        """
        key, sep, value = text.strip().partition("=")
        if sep:
            return cls(key, value)
        try:
            return cls.for_day(dt.date.fromisoformat(key))
        except ValueError:
            return cls("run", key)

    @classmethod
    def for_day(cls, day: dt.date) -> Partition:
        """The partition of a logical date."""
        return cls("date", day.isoformat())

    @property
    def name(self) -> str:
        """The folder name, Hive style, so readers such as pyarrow.dataset see a `date` column."""
        return f"{self.key}={self.value}"

    @property
    def day(self) -> dt.date | None:
        """The logical date, or None for a run partition."""
        return dt.date.fromisoformat(self.value) if self.key == "date" else None


def new_attempt() -> str:
    """A token unique to one run attempt: names its staging folder and its files."""
    return f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def partition_dir(root: str, table: str, partition: Partition) -> str:
    """Where the committed partition of `table` lives."""
    return FileSystems.join(root, table, partition.name)


def staging_dir(root: str, table: str, partition: Partition, attempt: str) -> str:
    """Where one attempt writes before its commit; `_`-prefixed, so dataset readers skip it."""
    return FileSystems.join(root, table, STAGING, f"{partition.name}.{attempt}")


def _is_local(path: str) -> bool:
    return isinstance(FileSystems.get_filesystem(path), LocalFileSystem)


def _data_files(folder: str) -> list[str]:
    matches = FileSystems.match([FileSystems.join(folder, "*" + DATA_SUFFIX)])[0].metadata_list
    return sorted(meta.path for meta in matches)


def _write_json(path: str, value: dict[str, Any]) -> None:
    with FileSystems.create(path, mime_type="application/json") as handle:
        handle.write(json.dumps(value, indent=2, sort_keys=True).encode("utf-8"))


def _ensure_dir(path: str) -> None:
    if not FileSystems.exists(path):
        FileSystems.mkdirs(path)


def delete_folder(path: str) -> None:
    """Delete a folder and everything in it, on a local disk (one rmtree) or an object store (prefix)."""
    FileSystems.delete([path.rstrip("/") if _is_local(path) else FileSystems.join(path, "")])


def parquet_rows(path: str) -> int:
    """Row count from a Parquet footer (no data pages are read)."""
    with FileSystems.open(path) as handle:
        return pq.ParquetFile(handle).metadata.num_rows


def read_manifest(folder: str) -> dict[str, Any] | None:
    """The `_SUCCESS` manifest of a partition folder, or None when it was never committed."""
    path = FileSystems.join(folder, MANIFEST)
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as handle:
        return json.loads(handle.read().decode("utf-8"))


def committed_files(folder: str) -> list[str]:
    """The data files of a committed partition, as its manifest names them ([] if not committed).

    On object stores a commit is several steps; reading through the manifest sees either the old or
    the new partition, where a glob could see a mix for the duration of a commit.
    """
    manifest = read_manifest(folder)
    return [FileSystems.join(folder, name) for name in manifest["files"]] if manifest else []


def commit_partition(staged: str, final: str, attempt: str, by_rename: bool | None = None,
                     **lineage: Any) -> dict[str, Any]:
    """Make the Parquet files in `staged` the whole content of partition folder `final`.

    Local disks: the staged folder is renamed into place (the old partition renamed aside first), so
    the partition is the old or the new one, never a mix. Object stores (gs://): the new files are
    copied in under attempt-unique names, the manifest is written last (one atomic object write),
    then files it does not name are deleted; `committed_files` sees the old manifest until then.

    Args:
        staged: folder holding exactly the new partition's data files.
        final: the partition folder (`partition_dir`).
        attempt: the token of this run attempt (`new_attempt`).
        by_rename: force the protocol (default: rename on local disks, manifest elsewhere).
        lineage: extra manifest entries (table, partition, run_id, ...).

    Returns:
        The manifest: rows, files, file_rows, attempt, committed_at and the lineage entries. Committing
        an attempt that is already committed (a retried bundle) returns its manifest and changes nothing.
    """
    committed = read_manifest(final)
    if committed and committed.get("attempt") == attempt:
        return committed  # a retried commit of this very attempt: it landed already
    files = _data_files(staged)
    file_rows = {FileSystems.split(path)[1]: parquet_rows(path) for path in files}
    manifest = {**lineage, "rows": sum(file_rows.values()), "files": sorted(file_rows),
                "file_rows": file_rows, "attempt": attempt,
                "committed_at": dt.datetime.now(dt.UTC).isoformat()}
    if _is_local(final) if by_rename is None else by_rename:
        _commit_by_rename(staged, final, attempt, manifest)
    else:
        manifest = _commit_by_manifest(files, final, attempt, manifest)
    LOGGER.info("committed %s: %d rows in %d files", final, manifest["rows"], len(files))
    return manifest


def _commit_by_rename(staged: str, final: str, attempt: str, manifest: dict[str, Any]) -> None:
    _write_json(FileSystems.join(staged, MANIFEST), manifest)
    table_dir, name = FileSystems.split(final)
    aside = FileSystems.join(table_dir, TRASH, f"{name}.{attempt}")
    if FileSystems.exists(final):
        _ensure_dir(FileSystems.split(aside)[0])
        FileSystems.rename([final], [aside])
    _ensure_dir(table_dir)
    FileSystems.rename([staged], [final])
    if FileSystems.exists(aside):
        delete_folder(aside)


def _commit_by_manifest(files: list[str], final: str, attempt: str,
                        manifest: dict[str, Any]) -> dict[str, Any]:
    renamed = {name: f"{attempt}-{name}" for name in manifest["files"]}
    _ensure_dir(final)
    FileSystems.copy(files, [FileSystems.join(final, renamed[FileSystems.split(path)[1]]) for path in files])
    manifest = {**manifest, "files": sorted(renamed.values()),
                "file_rows": {renamed[name]: rows for name, rows in manifest["file_rows"].items()}}
    _write_json(FileSystems.join(final, MANIFEST), manifest)
    keep = set(manifest["files"])
    stale = [path for path in _data_files(final) if FileSystems.split(path)[1] not in keep]
    if stale:
        FileSystems.delete(stale)
    return manifest


def discard_staging(root: str, table: str, partition: Partition) -> int:
    """Delete what attempts at this partition left under `_staging` (data never visible); returns
    how many attempt folders went."""
    staging_root = FileSystems.join(root, table, STAGING)
    if _is_local(staging_root):  # a failed attempt may leave empty folders, which a match cannot see
        folders = sorted(str(path) for path in Path(staging_root).glob(f"{partition.name}.*"))
    else:
        pattern = FileSystems.join(staging_root, f"{partition.name}.*", "**")
        paths = [meta.path for meta in FileSystems.match([pattern])[0].metadata_list]
        attempts = {path[len(staging_root):].lstrip("/").split("/")[0] for path in paths}
        folders = sorted(FileSystems.join(staging_root, name) for name in attempts)
    for folder in folders:
        delete_folder(folder)
    return len(folders)


class CommitPartitionFn(beam.DoFn):
    """Commits the staged files of one partition once all of them are written (one element in)."""

    def __init__(self, root: str, table: str, partition: Partition, attempt: str,
                 run_id: str | None) -> None:
        self.root = root
        self.table = table
        self.partition = partition
        self.attempt = attempt
        self.run_id = run_id
        self.rows_committed = Metrics.counter("linnet", f"{table}_rows_committed")

    def process(self, _written_files: list[str]) -> Iterator[dict[str, Any]]:
        manifest = commit_partition(
            staging_dir(self.root, self.table, self.partition, self.attempt),
            partition_dir(self.root, self.table, self.partition), self.attempt,
            table=self.table, partition=self.partition.name, run_id=self.run_id)
        discard_staging(self.root, self.table, self.partition)
        self.rows_committed.inc(manifest["rows"])
        yield manifest


class WritePartition(beam.PTransform):
    """Rows → one committed partition `ROOT/TABLE/<partition>/` of Parquet files in `schema`.

    Outputs the partition's manifest (one dict) once it is committed, so later steps (the watermark,
    a run summary) can wait on it.

    Args:
        root: the output folder (local or gs://).
        table: table folder name; also the schema name unless `schema` is given.
        partition: the partition this run replaces.
        run_id: recorded in the manifest.
    """

    def __init__(self, root: str, table: str, partition: Partition, run_id: str | None = None,
                 schema: str | None = None) -> None:
        super().__init__()
        self.root = root
        self.table = table
        self.schema = schema or table
        self.partition = partition
        self.run_id = run_id
        self.attempt = new_attempt()

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        prefix = FileSystems.join(staging_dir(self.root, self.table, self.partition, self.attempt), "part")
        return (
            rows
            | "WriteStaged" >> WriteTable(prefix, self.schema)
            | "AllFilesWritten" >> beam.combiners.ToList()
            | "Commit" >> beam.ParDo(CommitPartitionFn(self.root, self.table, self.partition, self.attempt,
                                                       self.run_id))
        )
