"""BigQuery source and partition sink, for real against a local bqemulator started by these tests."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from bigquery_emulator import Emulator
from faults import FailOn

import schemas
from pipelines import bigquery as bq

DAY = dt.date(2026, 11, 24)


@pytest.fixture(scope="session")
def connection(bq_emulator: Emulator) -> bq.BigQueryConnection:
    return bq.BigQueryConnection(bq_emulator.project, bq_emulator.endpoint, bq_emulator.storage_endpoint)


@pytest.fixture
def dataset(connection: bq.BigQueryConnection) -> str:
    """A fresh dataset per test, so tests never see each other's tables."""
    name = f"{connection.project}.t_{uuid.uuid4().hex[:10]}"
    connection.client().create_dataset(name)
    return name


def at(day: dt.date, hour: int = 9) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), tzinfo=dt.UTC)


def product(product_id: str, day: dt.date = DAY, **fields) -> dict:
    return {"product_id": product_id, "store": "s1", "title": f"Product {product_id}", "tags": ["a", "b"],
            "updated_at": at(day), **fields}


def categorized(product_id: str, run_id: str = "run-1") -> dict:
    return {"product_id": product_id, "store": "s1", "gpt_id": 3, "gpt_path": "Animals > Pets > Dogs",
            "depth": 3, "level_ids": [1, 2, 3, -1, -1, -1, -1],
            "level_confidences": [0.9, 0.8, 0.7, 0.0, 0.0, 0.0, 0.0], "shopify_category_id": None,
            "decision": "leaf", "abstain_reason": None, "decoding": "exact", "model_version": "m1",
            "taxonomy_version": "2021-09-21", "thresholds_version": "t1", "code_version": "0.1.0",
            "run_id": run_id, "scored_at": at(DAY, 23), "updated_at": at(DAY)}


def seed_products(connection: bq.BigQueryConnection, table: str, rows: list[dict]) -> None:
    client = connection.client()
    from google.cloud import bigquery

    client.create_table(bigquery.Table(table, schema=bq.table_schema("products", partitioned=False)))
    client.insert_rows(client.get_table(table), rows)


def partition_rows(connection: bq.BigQueryConnection, table: str) -> dict[str, list[str]]:
    query = f"SELECT CAST(partition_date AS STRING) AS day, product_id FROM `{table}` ORDER BY 1, 2"
    result: dict[str, list[str]] = {}
    for row in connection.client().query(query).result():
        result.setdefault(row["day"], []).append(row["product_id"])
    return result


def test_table_ids_are_validated():
    assert bq.table_id("my-project:ds.tbl") == "my-project.ds.tbl"
    assert bq.table_id("my-project.ds.tbl") == "my-project.ds.tbl"
    for bad in ("ds.tbl", "tbl", "my-project.ds.tbl.x", "My Project.ds.tbl"):
        with pytest.raises(ValueError):
            bq.table_id(bad)


def test_schemas_come_from_the_schema_files():
    fields = bq.table_schema("categorized")
    assert [field.name for field in fields] == schemas.field_names("categorized") + ["partition_date"]
    by_name = {field.name: field for field in fields}
    assert by_name["level_confidences"].mode == "REPEATED" and by_name["scored_at"].field_type == "TIMESTAMP"


def test_reads_the_products_of_one_day_with_dead_letters(connection, dataset):
    table = f"{dataset}.products"
    seed_products(connection, table, [
        product("a"), product("b"), product("old", DAY - dt.timedelta(days=1)),
        product("next", DAY + dt.timedelta(days=1)),
        {"product_id": "empty", "store": "s1", "updated_at": at(DAY, 23)},
    ])
    with TestPipeline() as pipeline:
        read = pipeline | bq.ReadProductsFromBigQuery(connection, table=table, day=DAY)
        assert_that(read.records | "Ids" >> beam.Map(lambda record: (record["product_id"], record["tags"])),
                    equal_to([("a", ["a", "b"]), ("b", ["a", "b"])]), label="Products")
        assert_that(read.dead_letter | "Reasons" >> beam.Map(lambda row: (row["product_id"], row["reason"])),
                    equal_to([("empty", "no_text_or_image")]), label="DeadLetters")


def test_reads_a_query_result(connection, dataset):
    table = f"{dataset}.products"
    seed_products(connection, table, [product("a"), product("b", store="s2"), product("c", store="s2")])
    query = f"SELECT product_id, store FROM `{table}` WHERE store = 's2'"
    with TestPipeline() as pipeline:
        rows = pipeline | bq.ReadBigQueryRows(connection, query=query)
        assert_that(rows, equal_to([{"product_id": "b", "store": "s2"}, {"product_id": "c", "store": "s2"}]))


def test_a_query_reaches_every_command_that_reads_products(connection, bq_emulator, dataset):
    """`product_source` is the one choice of input that score, backfill and build-training-data make."""
    from pipelines.sources import product_source

    table = f"{dataset}.products"
    seed_products(connection, table, [product("a"), product("b", store="s2"), product("c", store="s2")])
    options = PipelineOptions([f"--project={bq_emulator.project}",
                               f"--bigquery_endpoint={bq_emulator.endpoint}",
                               f"--bigquery_storage_endpoint={bq_emulator.storage_endpoint}",
                               f"--query=SELECT * FROM `{table}` WHERE store = 's2'"])
    with TestPipeline() as pipeline:
        read = pipeline | product_source(options)
        assert_that(read.records | beam.Map(lambda record: record["product_id"]), equal_to(["b", "c"]))


def write_partition(connection, table: str, rows: list[dict], day: dt.date, temp: Path,
                    fail_on: str | None = None) -> None:
    with TestPipeline() as pipeline:
        manifest = (
            pipeline
            | "Rows" >> beam.Create(rows)
            | "MaybeFail" >> beam.Map(FailOn(fail_on))
            | "Write" >> bq.WriteBigQueryPartition(connection, table, "categorized", day, str(temp), "run-1")
        )
        assert_that(manifest | beam.Map(lambda value: (value["partition"], value["rows"])),
                    equal_to([(f"date={day.isoformat()}", len(rows))]))


def test_rerun_replaces_its_partition_only(connection, dataset, tmp_path):
    table = f"{dataset}.categorized"
    before = DAY - dt.timedelta(days=1)
    write_partition(connection, table, [categorized("a"), categorized("b"), categorized("c")], DAY, tmp_path)
    write_partition(connection, table, [categorized("z")], before, tmp_path)
    write_partition(connection, table, [categorized("b", "run-2"), categorized("d", "run-2")], DAY, tmp_path)

    assert partition_rows(connection, table) == {before.isoformat(): ["z"], DAY.isoformat(): ["b", "d"]}
    row = next(iter(connection.client().query(
        f"SELECT * FROM `{table}` WHERE product_id = 'd'").result()))
    assert row["level_ids"] == [1, 2, 3, -1, -1, -1, -1] and row["run_id"] == "run-2"
    assert row["level_confidences"][0] == pytest.approx(0.9) and row["scored_at"] == at(DAY, 23)
    client = connection.client()
    assert [item.table_id for item in client.list_tables(dataset)] == ["categorized"]
    assert [path.name for path in (tmp_path / "linnet-bigquery").rglob("*") if path.is_file()] == [
        bq.COMMITTED] * 3, "only the commit markers stay"
    assert client.get_table(table).time_partitioning.field == "partition_date"


def test_a_retry_after_a_successful_commit_succeeds(connection, dataset, tmp_path):
    """The runner may retry the commit's bundle after the commit went through (a worker lost before the
    bundle finished): the retry finds the staged files gone and must return the same manifest."""
    table = f"{dataset}.categorized"
    write = bq.WriteBigQueryPartition(connection, table, "categorized", DAY, str(tmp_path), "run-1")
    with TestPipeline() as pipeline:
        _ = pipeline | beam.Create([categorized("a"), categorized("b")]) | write
    committed = partition_rows(connection, table)
    retry = bq.CommitBigQueryPartitionFn(connection, write.table, "categorized", DAY, write.attempt,
                                         write.staging_folder, "run-1")
    (manifest,) = retry.process([f"{write.staging_folder}/part-00000-of-00001.parquet"])
    assert manifest["rows"] == 2 and manifest["attempt"] == write.attempt
    assert partition_rows(connection, table) == committed == {DAY.isoformat(): ["a", "b"]}


def test_failed_run_changes_nothing(connection, dataset, tmp_path):
    table = f"{dataset}.categorized"
    write_partition(connection, table, [categorized("a")], DAY, tmp_path)
    with pytest.raises(Exception, match="injected failure"):
        write_partition(connection, table, [categorized("b"), categorized("c")], DAY, tmp_path, fail_on="c")
    assert partition_rows(connection, table) == {DAY.isoformat(): ["a"]}


def test_failed_commit_keeps_the_old_partition_and_drops_staging(connection, dataset, tmp_path):
    table = f"{dataset}.categorized"
    write_partition(connection, table, [categorized("a")], DAY, tmp_path)
    broken = tmp_path / "broken.parquet"
    pq.write_table(pa.table({"product_id": ["x"], "depth": ["not a number"]}), broken)
    with pytest.raises(Exception):  # noqa: B017 - whichever error the load raises, nothing may change
        bq.commit_bigquery_partition(connection.client(), table, "categorized", DAY, [str(broken)], "a1")
    assert partition_rows(connection, table) == {DAY.isoformat(): ["a"]}
    assert [item.table_id for item in connection.client().list_tables(dataset)] == ["categorized"]


def test_connection_from_pipeline_options(bq_emulator):
    options = PipelineOptions([f"--project={bq_emulator.project}",
                               f"--bigquery_endpoint={bq_emulator.endpoint}",
                               f"--bigquery_storage_endpoint={bq_emulator.storage_endpoint}"])
    connection = bq.BigQueryConnection.from_options(options)
    assert connection == bq.BigQueryConnection(bq_emulator.project, bq_emulator.endpoint,
                                               bq_emulator.storage_endpoint)
    with pytest.raises(ValueError, match="--project"):
        bq.BigQueryConnection.from_options(PipelineOptions([]))
