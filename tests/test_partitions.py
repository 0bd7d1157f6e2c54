"""Partition commits: a rerun replaces its partition, a failed run leaves nothing visible."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import apache_beam as beam
import pyarrow.dataset as ds
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from faults import FailOn
from gcs_emulator import run_scenario

from pipelines import partitions
from pipelines.partitions import Partition, WritePartition
from pipelines.publish import published, published_dir

DAY = Partition.parse("2026-11-24")


def product(product_id: str, day: dt.date = dt.date(2026, 11, 24)) -> dict:
    updated = dt.datetime.combine(day, dt.time(8, 30), tzinfo=dt.UTC)
    return {"product_id": product_id, "store": "s1", "title": f"title {product_id}", "updated_at": updated}


def write(root: Path, rows: list[dict], partition: Partition = DAY, fail_on: str | None = None) -> None:
    with TestPipeline() as pipeline:
        manifests = (
            pipeline
            | "Rows" >> beam.Create(rows)
            | "MaybeFail" >> beam.Map(FailOn(fail_on))
            | "Write" >> WritePartition(str(root), "products", partition, run_id="run-1")
        )
        assert_that(manifests | beam.Map(lambda manifest: manifest["rows"]), equal_to([len(rows)]))


def visible_ids(root: Path) -> list[str]:
    """What a Hive-partitioned dataset reader sees (it skips `_staging` and `_trash`)."""
    table = ds.dataset(root / "products", format="parquet", partitioning="hive").to_table()
    return sorted(table.column("product_id").to_pylist())


def test_partition_names_parse_and_reject_unsafe_values():
    assert Partition.parse("2026-11-24") == Partition("date", "2026-11-24")
    assert Partition.parse("date=2026-11-24").day == dt.date(2026, 11, 24)
    assert Partition.parse("nightly-42").name == "run=nightly-42"
    assert Partition.parse("run=abc").day is None
    for bad in ("date=2026-02-30", "2025-02-30", "2026-13-01", "run=../etc", "run=a/b", "shard=1"):
        with pytest.raises(ValueError):
            Partition.parse(bad)


def test_rerun_replaces_the_partition_and_keeps_the_others(tmp_path: Path):
    write(tmp_path, [product("a"), product("b"), product("c")])
    other = Partition.parse("2026-11-23")
    write(tmp_path, [product("z", dt.date(2026, 11, 23))], partition=other)
    write(tmp_path, [product("b"), product("d")])

    assert visible_ids(tmp_path) == ["b", "d", "z"]
    manifest = partitions.read_manifest(partitions.partition_dir(str(tmp_path), "products", DAY))
    assert manifest["rows"] == 2 and manifest["partition"] == "date=2026-11-24"
    assert manifest["run_id"] == "run-1" and manifest["table"] == "products"
    assert sum(manifest["file_rows"].values()) == 2
    assert sorted((tmp_path / "products").iterdir()) == [
        tmp_path / "products" / name for name in ("_staging", "_trash", "date=2026-11-23", "date=2026-11-24")]
    assert list((tmp_path / "products" / "_staging").iterdir()) == []
    assert list((tmp_path / "products" / "_trash").iterdir()) == []


def test_failed_run_leaves_no_partition_visible(tmp_path: Path):
    with pytest.raises(Exception, match="injected failure"):
        write(tmp_path, [product("a"), product("b")], fail_on="b")
    assert not (tmp_path / "products" / DAY.name).exists()
    assert partitions.committed_files(str(tmp_path / "products" / DAY.name)) == []


def test_failed_rerun_keeps_the_committed_partition_whole(tmp_path: Path):
    write(tmp_path, [product("a"), product("b")])
    with pytest.raises(Exception, match="injected failure"):
        write(tmp_path, [product("c"), product("d"), product("e")], fail_on="e")
    assert visible_ids(tmp_path) == ["a", "b"]
    write(tmp_path, [product("c")])
    assert visible_ids(tmp_path) == ["c"]
    # The failed attempt's staged files stay while they could be a live concurrent run's ...
    [left] = (tmp_path / "products" / "_staging").iterdir()
    # ... and go with the next commit once they are older than any run.
    left.rename(left.with_name(f"{DAY.name}.20000101T000000-deadbeef"))
    write(tmp_path, [product("d")])
    assert list((tmp_path / "products" / "_staging").iterdir()) == []


def test_empty_run_commits_an_empty_partition(tmp_path: Path):
    write(tmp_path, [product("a")])
    write(tmp_path, [])
    manifest = partitions.read_manifest(str(tmp_path / "products" / DAY.name))
    assert manifest["rows"] == 0
    assert visible_ids(tmp_path) == []


def test_an_append_of_nothing_commits_nothing(tmp_path: Path):
    """commit_empty=False (each append a fresh partition): no rows, no partition, no staged files."""
    append = Partition("run", "append-1")
    with TestPipeline() as pipeline:
        manifests = (pipeline | beam.Create([]) | WritePartition(str(tmp_path), "products", append,
                                                                 commit_empty=False))
        assert_that(manifests, equal_to([]))
    assert not (tmp_path / "products" / append.name).exists()
    assert list((tmp_path / "products" / "_staging").iterdir()) == []


def test_object_store_protocol_swaps_files_through_the_manifest(tmp_path: Path):
    """The gs:// protocol (copy under new names, manifest last, stale files deleted) on any filesystem."""
    final = str(tmp_path / "t" / DAY.name)
    first = write_staged(tmp_path / "first", ["a", "b"])
    partitions.commit_partition(first, final, "att1", by_rename=False)
    second = write_staged(tmp_path / "second", ["c"])
    manifest = partitions.commit_partition(second, final, "att2", by_rename=False)

    assert manifest["files"] == ["att2-part-0.parquet"] and manifest["rows"] == 1
    assert [Path(path).name for path in partitions.committed_files(final)] == ["att2-part-0.parquet"]
    assert sorted(path.name for path in Path(final).iterdir()) == ["_SUCCESS", "att2-part-0.parquet"]


def write_staged(folder: Path, ids: list[str]) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    pq.write_table(pa.table({"product_id": ids}), folder / "part-0.parquet")
    return str(folder)


@pytest.mark.emulator
@pytest.mark.subprocesses
def test_commits_on_gcs_through_the_storage_emulator(tmp_path: Path):
    """The gs:// protocol end to end: Beam's GCS filesystem against gcp-storage-emulator."""
    result = run_scenario(Path(__file__).with_name("gcs_partitions_scenario.py"), tmp_path)
    assert result["first"] == ["a", "b", "c"]
    assert result["crashed"] and result["after_crash"] == ["a", "b", "c"]
    assert result["second"] == ["b", "d"] and result["manifest"]["rows"] == 2
    prefix = "gs://linnet-test/out/products/date=2026-11-24/"
    files = [prefix + name for name in result["manifest"]["files"]]
    assert result["objects"] == sorted([prefix + "_SUCCESS", *files])
    # build-training-data's output on gs://: a failed publish leaves the previous one; the version before
    # the last stays for readers that resolved it, older ones go.
    assert result["publishes"] == [1, 1, 3, 4]
    prefix = result["versions"]
    versions = {path.removeprefix(prefix).split("/")[0] for path in result["data_objects"]
                if path.startswith(prefix)}
    assert len(versions) == 2 and result["published_dir"].startswith(prefix)
    assert result["data_objects"] == sorted([f"{result['data']}/CURRENT",
                                             *(f"{prefix}{version}/stats.json" for version in versions)])
    assert result["readable"] == [f"date=2026-11-24/{name}" for name in result["manifest"]["files"]]
    assert result["watermark"] == ["2026-11-23", "2026-11-24"] and result["stored_watermark"] == "2026-11-24"
    staged = f"gs://linnet-test/models/{result['model_version']}"
    assert result["model_uri"] == staged
    assert result["model_objects"] == [f"{staged}/{name}" for name in (
        "calibration.json", "model.json", "saved_model/saved_model.pb",
        "saved_model/variables/variables.index", "training_model.weights.h5")]


def test_a_local_output_is_published_whole_or_not_at_all(tmp_path: Path):
    output = tmp_path / "training_data"
    with published(str(output)) as folder:
        Path(folder).mkdir()
        Path(folder, "stats.json").write_text("1")
    with pytest.raises(RuntimeError), published(str(output)) as folder:
        Path(folder).mkdir()
        Path(folder, "stats.json").write_text("2")
        raise RuntimeError("injected failure")
    assert published_dir(str(output)) == str(output) and (output / "stats.json").read_text() == "1"
    assert [path.name for path in tmp_path.iterdir()] == ["training_data"]


def test_a_retried_commit_of_the_same_attempt_changes_nothing(tmp_path: Path):
    final = str(tmp_path / "t" / DAY.name)
    staged = write_staged(tmp_path / "staged", ["a", "b"])
    first = partitions.commit_partition(staged, final, "att1")
    assert not Path(staged).exists()
    assert partitions.commit_partition(staged, final, "att1") == first
    assert [Path(path).name for path in partitions.committed_files(final)] == ["part-0.parquet"]


WRITER = Path(__file__).with_name("partition_writer.py")


def start_writer(root: Path, run_id: str, ids: list[str], die_at: str | None = None) -> subprocess.Popen:
    """The writer in its own process; its stderr goes to a file (a full pipe would block a run that
    holds the commit lock)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), str(WRITER.parent),
                                                        os.environ.get("PYTHONPATH", "")])}
    with (root.parent / f"{root.name}-{run_id}.log").open("w") as log:
        return subprocess.Popen([sys.executable, str(WRITER), str(root), run_id, ",".join(ids),
                                 *([die_at] if die_at else [])], env=env, stderr=log)


def finish(process: subprocess.Popen, root: Path, run_id: str) -> int:
    returncode = process.wait(timeout=600)
    assert returncode in (0, -signal.SIGKILL), (root.parent / f"{root.name}-{run_id}.log").read_text()[-3000:]
    return returncode


def run_writer(root: Path, run_id: str, ids: list[str], die_at: str | None = None) -> int:
    return finish(start_writer(root, run_id, ids, die_at), root, run_id)


def table_state(root: Path, table: str) -> tuple[str | None, list[str]]:
    """(run_id of the committed partition, the product ids a dataset reader sees)."""
    manifest = partitions.read_manifest(str(root / table / DAY.name))
    ids = ds.dataset(root / table, format="parquet", partitioning="hive").to_table().column("product_id")
    return (manifest or {}).get("run_id"), sorted(ids.to_pylist())


@pytest.mark.subprocesses
def test_tables_of_a_run_commit_together_even_when_killed(tmp_path: Path):
    """Reproduction 6: a SIGKILL between the table commits left one table new and the other old."""
    assert run_writer(tmp_path, "run-1", ["a", "b"]) == 0
    assert run_writer(tmp_path, "run-2", ["c", "d", "e"], die_at="after_first_table") == -signal.SIGKILL
    journal = tmp_path / partitions.COMMITS / f"{DAY.name}.json"
    assert json.loads(journal.read_text())["run_id"] == "run-2", "the commit point was passed"
    # The next commit of the partition first rolls run-2 forward; this one then dies before its own
    # commit point (and leaves its lock behind): both tables are run-2's, whole.
    assert run_writer(tmp_path, "run-3", ["f"], die_at="before_journal") == -signal.SIGKILL
    assert table_state(tmp_path, "products") == table_state(tmp_path, "dead_letters") == (
        "run-2", ["c", "d", "e"])
    assert not journal.exists()
    # A dead run's lock is taken over, not waited on.
    assert run_writer(tmp_path, "run-4", ["g", "h"]) == 0
    assert table_state(tmp_path, "products") == table_state(tmp_path, "dead_letters") == ("run-4", ["g", "h"])


@pytest.mark.subprocesses
def test_recover_completes_an_interrupted_commit(tmp_path: Path):
    run_writer(tmp_path, "run-1", ["a"])
    run_writer(tmp_path, "run-2", ["b", "c"], die_at="after_first_table")
    with partitions.commit_lock(str(tmp_path), DAY):
        manifests = partitions.recover(str(tmp_path), DAY)
    assert [(m["table"], m["run_id"], m["rows"]) for m in manifests] == [
        ("products", "run-2", 2), ("dead_letters", "run-2", 2)]
    assert table_state(tmp_path, "products") == table_state(tmp_path, "dead_letters") == ("run-2", ["b", "c"])


@pytest.mark.parametrize("trial", range(2))
@pytest.mark.subprocesses
def test_concurrent_runs_on_one_partition_leave_one_whole_run(tmp_path: Path, trial: int):
    """Reproduction 3: two runs on one partition deleted each other's staged files; both tables
    were once committed empty."""
    runs = {"run-a": [f"a{i}" for i in range(30)], "run-b": [f"b{i}" for i in range(20)]}
    writers = {run_id: start_writer(tmp_path, run_id, ids) for run_id, ids in runs.items()}
    assert [finish(writer, tmp_path, run_id) for run_id, writer in writers.items()] == [0, 0]
    run_id, ids = table_state(tmp_path, "products")
    assert ids == sorted(runs[run_id]), "the last commit wins, whole"
    assert table_state(tmp_path, "dead_letters") == (run_id, ids)
    assert list((tmp_path / "products" / "_staging").iterdir()) == []
    assert not (tmp_path / partitions.COMMITS / f"{DAY.name}.lock").exists()
