"""Atomic partition commits for file tables: `ROOT/TABLE/date=YYYY-MM-DD/` (or `run=<id>/`).

A run writes its files under `ROOT/TABLE/_staging/`, then commits them as the partition: a rerun
replaces the partition (never adds to it) and a run that fails before the commit leaves nothing
visible. Every committed partition holds a `_SUCCESS` manifest naming its files and row counts.
An append-only table (the embedding table) commits each attempt as a fresh `run=<token>` partition,
and none when the attempt has no rows (`commit_empty=False`).

The tables of one run (categorized rows and dead letters, say) commit together: the commit point is
one journal object `ROOT/_commits/<partition>.json` naming the run's attempt and tables, written
after every table is staged; each table is then swapped in and the journal removed. A commit killed
after its journal is rolled forward (`recover`) by the next commit of that partition, so the tables
end up all old or all new. Concurrent runs of one partition on a local disk serialise their commits
on a lock file beside the journal and never delete each other's staged files: the last to commit
wins with a complete partition.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.localfilesystem import LocalFileSystem

from linnet_core.publish import MANIFEST, replace_dir
from linnet_core.records import day_bounds, updated_on  # noqa: F401 - part of this module's API
from pipelines.counters import counter
from pipelines.io import WriteTable

LOGGER = logging.getLogger(__name__)
STAGING = "_staging"
TRASH = "_trash"
COMMITS = "_commits"
DATA_SUFFIX = ".parquet"
STALE_STAGING = dt.timedelta(days=2)  # staged files of an attempt this old belong to no live run
LOCK_TIMEOUT_S = 600.0
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_DATE_LIKE = re.compile(r"^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}$")
_ATTEMPT_TIME = "%Y%m%dT%H%M%S"


@dataclass(frozen=True)
class Partition:
    """One output partition: a logical date (`date=2026-11-24`) or a run (`run=nightly-42`)."""

    key: str
    value: str

    def __post_init__(self) -> None:
        if self.key == "date":
            try:
                dt.date.fromisoformat(self.value)
            except ValueError:
                raise ValueError(f"bad partition date {self.value!r}: no such day (YYYY-MM-DD)") from None
        elif self.key != "run" or not _RUN_ID.match(self.value):
            raise ValueError(f"bad partition {self.key}={self.value!r}: expected date=YYYY-MM-DD or "
                             "run=<letters, digits, _ . ->")

    @classmethod
    def parse(cls, text: str) -> Partition:
        """`2026-11-24`, `date=2026-11-24` or `run=<id>`; a bare value that does not look like a date
        is a run id (one that does, `2025-02-30` say, must be a real day: a typo is no run id).

        Raises:
            ValueError: an impossible date, or a run id with characters unsafe in a path.
        """
        key, sep, value = text.strip().partition("=")
        if sep:
            return cls(key, value)
        return cls("date" if _DATE_LIKE.match(key) else "run", key)

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
    """A token unique to one run attempt: names its staging folder and its files (and says when it began)."""
    return f"{dt.datetime.now(dt.UTC):{_ATTEMPT_TIME}}-{uuid.uuid4().hex[:8]}"


def partition_dir(root: str, table: str, partition: Partition | None) -> str:
    """Where the committed partition of `table` lives; partition None: the whole table `ROOT/TABLE`."""
    return FileSystems.join(root, table, partition.name) if partition else FileSystems.join(root, table)


def staging_dir(root: str, table: str, partition: Partition | None, attempt: str) -> str:
    """Where one attempt writes before its commit; `_`-prefixed, so dataset readers skip it."""
    if partition is None:  # beside the table folder, which the commit renames as a whole
        return FileSystems.join(root, STAGING, f"{table}.{attempt}")
    return FileSystems.join(root, table, STAGING, f"{partition.name}.{attempt}")


def _commit_name(partition: Partition | None) -> str:
    return partition.name if partition else "tables"


def _is_local(path: str) -> bool:
    return isinstance(FileSystems.get_filesystem(path), LocalFileSystem)


def _data_files(folder: str) -> list[str]:
    matches = FileSystems.match([FileSystems.join(folder, "*" + DATA_SUFFIX)])[0].metadata_list
    return sorted(meta.path for meta in matches)


def write_json(path: str, value: dict[str, Any]) -> None:
    """`value` as the JSON object at `path` (one object write on object stores)."""
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


def staged_rows(root: str, table: str, partition: Partition | None, attempt: str) -> int:
    """The rows `attempt` staged for `table`, from the Parquet footers."""
    return sum(map(parquet_rows, _data_files(staging_dir(root, table, partition, attempt))))


def committed_files(folder: str) -> list[str]:
    """The data files of a committed partition, as its manifest names them ([] if not committed).

    On object stores a commit is several steps; reading through the manifest sees either the old or
    the new partition, where a glob could see a mix for the duration of a commit.
    """
    manifest = read_manifest(folder)
    return [FileSystems.join(folder, name) for name in manifest["files"]] if manifest else []


def committed_names(root: str) -> list[str]:
    """The partition manifests under table folder `root` and the files they name, relative to `root`:
    all a reader needs of it (staging, trash and journal folders, `_`-prefixed, are left out)."""
    root = root.rstrip("/")
    names = []
    for metadata in FileSystems.match([f"{root}/**{MANIFEST}"])[0].metadata_list:
        folder, name = FileSystems.split(metadata.path)
        relative = folder[len(root) + 1:]
        if name != MANIFEST or any(part.startswith("_") for part in relative.split("/") if part):
            continue
        prefix = f"{relative}/" if relative else ""
        names += [f"{prefix}{MANIFEST}", *(f"{prefix}{file}" for file in read_manifest(folder)["files"])]
    return sorted(names)


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
        by_rename: force the protocol (default: rename on local disks, manifest elsewhere; renaming
            needs a local disk).
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
    """The local protocol: the one folder swap every local output uses (`linnet_core.publish`), the old
    partition set aside under `_trash` by attempt, so a rolled-forward commit deletes what it left."""
    write_json(FileSystems.join(staged, MANIFEST), manifest)
    final_path = Path(final)
    replace_dir(Path(staged), final_path, aside=final_path.parent / TRASH / f"{final_path.name}.{attempt}")


def _commit_by_manifest(files: list[str], final: str, attempt: str,
                        manifest: dict[str, Any]) -> dict[str, Any]:
    renamed = {name: f"{attempt}-{name}" for name in manifest["files"]}
    _ensure_dir(final)
    FileSystems.copy(files, [FileSystems.join(final, renamed[FileSystems.split(path)[1]]) for path in files])
    manifest = {**manifest, "files": sorted(renamed.values()),
                "file_rows": {renamed[name]: rows for name, rows in manifest["file_rows"].items()}}
    write_json(FileSystems.join(final, MANIFEST), manifest)
    keep = set(manifest["files"])
    stale = [path for path in _data_files(final) if FileSystems.split(path)[1] not in keep]
    if stale:
        FileSystems.delete(stale)
    return manifest


def discard_staging(root: str, table: str, partition: Partition | None, attempt: str | None = None,
                    stale_after: dt.timedelta = STALE_STAGING) -> int:
    """Delete what `attempt`, and attempts older than `stale_after`, left under `_staging` (data never
    visible); returns how many attempt folders went. Younger attempts may be live concurrent runs of
    this partition: their staged files are theirs to commit."""
    staging_root = (FileSystems.join(root, STAGING) if partition is None
                    else FileSystems.join(root, table, STAGING))
    prefix = f"{table if partition is None else partition.name}."
    if _is_local(staging_root):  # a failed attempt may leave empty folders, which a match cannot see
        names = sorted(path.name for path in Path(staging_root).glob(f"{prefix}*"))
    else:
        pattern = FileSystems.join(staging_root, f"{prefix}*", "**")
        paths = [meta.path for meta in FileSystems.match([pattern])[0].metadata_list]
        names = sorted({path[len(staging_root):].lstrip("/").split("/")[0] for path in paths})
    cutoff = dt.datetime.now(dt.UTC) - stale_after
    gone = [name for name in names
            if name == f"{prefix}{attempt}" or _attempt_began(name[len(prefix):]) < cutoff]
    for name in gone:
        delete_folder(FileSystems.join(staging_root, name))
    return len(gone)


def _attempt_began(attempt: str) -> dt.datetime:
    try:
        return dt.datetime.strptime(attempt.split("-")[0], _ATTEMPT_TIME).replace(tzinfo=dt.UTC)
    except ValueError:  # not named by new_attempt: no run of ours will commit it
        return dt.datetime.min.replace(tzinfo=dt.UTC)


class PartitionBusyError(RuntimeError):
    """Another run holds the commit lock of a partition for longer than we wait."""


@contextlib.contextmanager
def commit_lock(root: str, partition: Partition | None, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Serialise the commits of one partition of `root` through a lock file (`O_EXCL`), on local disks.

    A lock whose holder is a dead process on this host is taken over (a run killed mid-commit);
    a live holder is waited for (commits take seconds), up to `timeout_s`. Object stores have no
    exclusive create here: their commits are not serialised (the journal still keeps them whole).

    Raises:
        PartitionBusyError: the lock stayed held for `timeout_s`; the message names its holder.
    """
    if not _is_local(root):
        yield
        return
    path = Path(root, COMMITS, f"{_commit_name(partition)}.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": dt.datetime.now(dt.UTC).isoformat()}
    deadline, waiting = time.monotonic() + timeout_s, False
    while True:
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _lock_holder(path)
            if holder is None or _holder_is_dead(holder):
                LOGGER.warning("taking over the stale commit lock %s (%s)", path, holder)
                path.unlink(missing_ok=True)
                continue
            if time.monotonic() > deadline:
                raise PartitionBusyError(
                    f"{path} is held by pid {holder.get('pid')} on {holder.get('host')} since "
                    f"{holder.get('since')}: another run is committing {_commit_name(partition)}; "
                    "wait for it, or delete the lock file if that run is gone") from None
            if not waiting:
                LOGGER.info("waiting for %s (held by pid %s)", path, holder.get("pid"))
                waiting = True
            time.sleep(0.1)
            continue
        with os.fdopen(descriptor, "w") as handle:
            json.dump(me, handle)
        break
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _lock_holder(path: Path) -> dict[str, Any] | None:
    """The lock's holder; None for a lock that is unreadable and older than a second (its writer died
    between create and write)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        try:
            return None if time.time() - path.stat().st_mtime > 1 else {}
        except FileNotFoundError:
            return {}


def _holder_is_dead(holder: dict[str, Any]) -> bool:
    if not holder or holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, ValueError, TypeError):
        return False
    return False


def _journal_path(root: str, partition: Partition | None) -> str:
    return FileSystems.join(root, COMMITS, f"{_commit_name(partition)}.json")


def _apply(root: str, partition: Partition | None, journal: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Swap in every table the journal names (each step idempotent), then drop the journal."""
    attempt, manifests = journal["attempt"], []
    for table in journal["tables"]:
        staged, final = staging_dir(root, table, partition, attempt), partition_dir(root, table, partition)
        manifests.append(commit_partition(staged, final, attempt, table=table,
                                          partition=_commit_name(partition), run_id=journal["run_id"]))
    FileSystems.delete([_journal_path(root, partition)])
    return manifests


def recover(root: str, partition: Partition | None) -> list[dict[str, Any]]:
    """Roll forward a commit of this partition that was killed after its journal; returns the
    manifests it completed ([] when there was none). Callers hold `commit_lock`."""
    path = _journal_path(root, partition)
    if not FileSystems.exists(path):
        return []
    with FileSystems.open(path) as handle:
        journal = json.loads(handle.read().decode("utf-8"))
    LOGGER.warning("rolling forward the interrupted commit %s of run %s", journal["attempt"],
                   journal["run_id"])
    return _apply(root, partition, journal)


def commit_tables(root: str, tables: list[str], partition: Partition | None, attempt: str,
                  run_id: str | None = None) -> list[dict[str, Any]]:
    """Commit the staged files of `attempt` as partition `partition` of every table, together.

    Returns:
        One manifest per table, in `tables` order.
    """
    with commit_lock(root, partition):
        recover(root, partition)
        journal = {"attempt": attempt, "run_id": run_id, "tables": tables,
                   "partition": _commit_name(partition), "written_at": dt.datetime.now(dt.UTC).isoformat()}
        _write_json_atomically(_journal_path(root, partition), journal)
        manifests = _apply(root, partition, journal)
    for table in tables:
        discard_staging(root, table, partition, attempt)
    return manifests


def write_atomically(path: str, data: bytes, mime_type: str = "application/octet-stream") -> None:
    """`data` as the file at `path` in one step, so no reader finds it missing or half-written: a local
    file is written aside (hidden) and renamed over the old one; an object write is atomic already."""
    if not _is_local(path):
        with FileSystems.create(path, mime_type=mime_type) as handle:
            handle.write(data)
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, target)


def _write_json_atomically(path: str, value: dict[str, Any]) -> None:
    write_atomically(path, json.dumps(value, indent=2, sort_keys=True).encode("utf-8"), "application/json")


class CommitTablesFn(beam.DoFn):
    """Commits the staged files of every table of one run once all are written (one element in);
    outputs one manifest per table (none when `commit_empty` is False and nothing was staged)."""

    def __init__(self, root: str, tables: list[str], partition: Partition | None, attempt: str,
                 run_id: str | None, commit_empty: bool = True) -> None:
        self.root = root
        self.tables = tables
        self.partition = partition
        self.attempt = attempt
        self.run_id = run_id
        self.commit_empty = commit_empty
        self.rows_committed = {table: counter(f"{table}_rows_committed")
                               for table in tables}

    def process(self, _written: list[str]) -> Iterator[dict[str, Any]]:
        if not self.commit_empty and not any(staged_rows(self.root, table, self.partition, self.attempt)
                                             for table in self.tables):
            for table in self.tables:
                discard_staging(self.root, table, self.partition, self.attempt)
            return
        for manifest in commit_tables(self.root, self.tables, self.partition, self.attempt, self.run_id):
            self.rows_committed[manifest["table"]].inc(manifest["rows"])
            yield manifest


def staged(rows: beam.PCollection, prefix: str, schema_name: str, label: str = "") -> beam.PCollection:
    """The first half of every stage-and-commit write (partitions here, BigQuery partitions): `rows`
    written as Parquet files `prefix-*`, then one element, the files' list, once every file is written,
    which the commit waits on. `label` tells one table's steps from another's within a composite."""
    return (rows
            | f"WriteStaged{label}" >> WriteTable(prefix, schema_name)
            | f"AllFilesWritten{label}" >> beam.combiners.ToList())


class WritePartitions(beam.PTransform):
    """`{table: rows}` → one partition of every table, committed together (`commit_tables`).

    Outputs the manifests (one per table) once committed, so later steps (the watermark, a run
    summary) can wait on them.

    Args:
        root: the output folder (local or gs://).
        schemas: table folder name → schema name (`schemas/<name>.json`).
        partition: the partition this run replaces; None replaces whole tables `ROOT/TABLE/`.
        run_id: recorded in the manifests.
        commit_empty: False commits nothing (and outputs no manifest) when no table got a row: for an
            append, a fresh partition per attempt, where an empty one would only be one more to list.
    """

    def __init__(self, root: str, schemas: Mapping[str, str], partition: Partition | None,
                 run_id: str | None = None, commit_empty: bool = True) -> None:
        super().__init__()
        self.root = root
        self.schemas = dict(schemas)
        self.partition = partition
        self.run_id = run_id
        self.commit_empty = commit_empty
        self.attempt = new_attempt()

    def expand(self, tables: Mapping[str, beam.PCollection]) -> beam.PCollection:
        def prefix(table: str) -> str:
            return FileSystems.join(staging_dir(self.root, table, self.partition, self.attempt), "part")

        written = [
            staged(rows, prefix(table), self.schemas[table], f"[{table}]")
            | f"Written[{table}]" >> beam.Map(lambda _files, table=table: table)
            for table, rows in tables.items()]
        return (
            written
            | "AllTablesStaged" >> beam.Flatten()
            | "AllWritten" >> beam.combiners.ToList()
            | "Commit" >> beam.ParDo(CommitTablesFn(self.root, list(tables), self.partition, self.attempt,
                                                    self.run_id, self.commit_empty))
        )


class WritePartition(WritePartitions):
    """Rows → one committed partition `ROOT/TABLE/<partition>/` of Parquet files in `schema` (the
    one-table case of `WritePartitions`); outputs the manifest.

    Args:
        table: table folder name; also the schema name unless `schema` is given.
    """

    def __init__(self, root: str, table: str, partition: Partition, run_id: str | None = None,
                 schema: str | None = None, commit_empty: bool = True) -> None:
        super().__init__(root, {table: schema or table}, partition, run_id, commit_empty)
        self.table = table

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        return super().expand({self.table: rows})
