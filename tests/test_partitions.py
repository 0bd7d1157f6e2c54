"""Partition commits: a rerun replaces its partition, a failed run leaves nothing visible."""

from __future__ import annotations

import datetime as dt
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
    for bad in ("date=2026-02-30", "run=../etc", "run=a/b", "shard=1"):
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
    assert list((tmp_path / "products" / "_staging").iterdir()) == []


def test_empty_run_commits_an_empty_partition(tmp_path: Path):
    write(tmp_path, [product("a")])
    write(tmp_path, [])
    manifest = partitions.read_manifest(str(tmp_path / "products" / DAY.name))
    assert manifest["rows"] == 0
    assert visible_ids(tmp_path) == []


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


def test_commits_on_gcs_through_the_storage_emulator(tmp_path: Path):
    """The gs:// protocol end to end: Beam's GCS filesystem against gcp-storage-emulator."""
    result = run_scenario(Path(__file__).with_name("gcs_partitions_scenario.py"), tmp_path)
    assert result["first"] == ["a", "b", "c"]
    assert result["crashed"] and result["after_crash"] == ["a", "b", "c"]
    assert result["second"] == ["b", "d"] and result["manifest"]["rows"] == 2
    prefix = "gs://linnet-test/out/products/date=2026-11-24/"
    files = [prefix + name for name in result["manifest"]["files"]]
    assert result["objects"] == sorted([prefix + "_SUCCESS", *files])
    assert result["watermark"] == ["2026-11-23", "2026-11-24"] and result["stored_watermark"] == "2026-11-24"
    staged = f"gs://linnet-test/models/{result['model_version']}"
    assert result["model_uri"] == staged
    assert result["model_objects"] == [f"{staged}/{name}" for name in (
        "model.json", "saved_model/saved_model.pb", "saved_model/variables/variables.index",
        "thresholds.json", "training_model.weights.h5")]


def test_a_retried_commit_of_the_same_attempt_changes_nothing(tmp_path: Path):
    final = str(tmp_path / "t" / DAY.name)
    staged = write_staged(tmp_path / "staged", ["a", "b"])
    first = partitions.commit_partition(staged, final, "att1")
    assert not Path(staged).exists()
    assert partitions.commit_partition(staged, final, "att1") == first
    assert [Path(path).name for path in partitions.committed_files(final)] == ["part-0.parquet"]
