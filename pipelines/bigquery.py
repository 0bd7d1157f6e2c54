"""BigQuery in and out: Storage Read API reads, and writes that replace one date partition atomically.

Beam's own BigQuery IO cannot be pointed at a local emulator: its apitools client has a fixed endpoint
and asks for Google credentials, EXPORT reads and FILE_LOADS writes need GCS, and its Storage Read
client takes no endpoint. This source/sink uses the google-cloud-bigquery(-storage) clients, which
take an endpoint, so the same code runs against BigQuery and against the tests' emulator.

Tables written here have the columns of `schemas/<name>.json` plus `partition_date` (DATE), the
logical date of the run that wrote the row; tables are partitioned by it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

import schemas
from pipelines.counters import counter
from pipelines.dead_letters import DEAD_LETTER, Routed
from pipelines.io import PRODUCTS, ValidateProductFn
from pipelines.partitions import day_bounds, new_attempt, parquet_rows, staged

LOGGER = logging.getLogger(__name__)
PARTITION_COLUMN = "partition_date"
STAGING_EXPIRY = dt.timedelta(days=1)
# Written into an attempt's staging folder once its partition is committed: its manifest.
COMMITTED = "_COMMITTED"
_TABLE_ID = re.compile(r"^(?P<project>(?:[a-z0-9.-]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9])[.:]"
                       r"(?P<dataset>\w{1,1024})\.(?P<table>[\w$-]{1,1024})$")


class BigQueryOptions(PipelineOptions):
    """Where the BigQuery APIs are; the defaults are Google's, the tests point them at an emulator."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument("--bigquery_endpoint", default=None,
                            help="BigQuery REST endpoint, e.g. http://127.0.0.1:9050 (default: Google's)")
        parser.add_argument("--bigquery_storage_endpoint", default=None,
                            help="Storage Read API endpoint host:port, plaintext gRPC (default: Google's)")
        parser.add_argument("--bigquery_temp_dataset", default="linnet_tmp",
                            help="dataset of the billing project for query results and staging tables")


@dataclass(frozen=True)
class BigQueryConnection:
    """How to reach BigQuery: billing project and optional endpoints (picklable; clients are made late)."""

    project: str
    endpoint: str | None = None
    storage_endpoint: str | None = None
    temp_dataset: str = "linnet_tmp"

    @classmethod
    def from_options(cls, options: PipelineOptions) -> BigQueryConnection:
        """From `--project` and the `BigQueryOptions` flags.

        Raises:
            ValueError: no `--project`.
        """
        project = options.view_as(GoogleCloudOptions).project
        if not project:
            raise ValueError("BigQuery input or output needs --project (the billing project)")
        flags = options.view_as(BigQueryOptions)
        return cls(project, flags.bigquery_endpoint, flags.bigquery_storage_endpoint,
                   flags.bigquery_temp_dataset)

    def client(self) -> Any:
        """A google-cloud-bigquery client (anonymous credentials when an endpoint is given)."""
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        if self.endpoint is None:
            return bigquery.Client(project=self.project)
        return bigquery.Client(project=self.project, credentials=AnonymousCredentials(),
                               client_options=ClientOptions(api_endpoint=self.endpoint))

    def read_client(self) -> Any:
        """A Storage Read API client (plaintext gRPC when an endpoint is given)."""
        from google.cloud.bigquery_storage_v1 import BigQueryReadClient

        if self.storage_endpoint is None:
            return BigQueryReadClient()
        import grpc
        from google.cloud.bigquery_storage_v1.services.big_query_read.transports import (
            BigQueryReadGrpcTransport,
        )

        channel = grpc.insecure_channel(self.storage_endpoint)
        return BigQueryReadClient(transport=BigQueryReadGrpcTransport(channel=channel))


def table_id(spec: str) -> str:
    """`project.dataset.table` from that or `project:dataset.table`.

    Raises:
        ValueError: not a fully qualified table id.
    """
    match = _TABLE_ID.match(spec.strip())
    if not match:
        raise ValueError(f"expected a table id PROJECT.DATASET.TABLE, got {spec!r}")
    return f"{match['project']}.{match['dataset']}.{match['table']}"


def _session_table(table: str) -> str:
    project, dataset, name = table.split(".")
    return f"projects/{project}/datasets/{dataset}/tables/{name}"


def table_schema(name: str, partitioned: bool = True) -> list[Any]:
    """BigQuery `SchemaField`s of `schemas/<name>.json`, plus `partition_date` when partitioned."""
    from google.cloud import bigquery

    # from_api_repr keeps (and may fill in) the dict it is given: a copy, not the shared schema.
    fields = [bigquery.SchemaField.from_api_repr(dict(field)) for field in schemas.load(name)]
    if partitioned:
        fields.append(bigquery.SchemaField(PARTITION_COLUMN, "DATE", mode="REQUIRED",
                                           description="Logical date of the run that wrote the row."))
    return fields


def day_restriction(day: dt.date, column: str = "updated_at") -> str:
    """A row filter (SQL) for rows whose `column` timestamp falls on `day`: `partitions.day_bounds`."""
    start, end = day_bounds(day)
    return f"{column} >= TIMESTAMP '{start.isoformat()}' AND {column} < TIMESTAMP '{end.isoformat()}'"


class OpenReadSessionFn(beam.DoFn):
    """Opens one Storage Read session over a table (or a query's result) and emits its streams."""

    def __init__(self, connection: BigQueryConnection, table: str | None, query: str | None,
                 row_restriction: str | None, max_streams: int) -> None:
        self.connection = connection
        self.table = table
        self.query = query
        self.row_restriction = row_restriction
        self.max_streams = max_streams

    def process(self, _: Any) -> Iterator[tuple[str, bytes]]:
        from google.cloud.bigquery_storage_v1 import types

        table = self.table or self._run_query()
        options = types.ReadSession.TableReadOptions(row_restriction=self.row_restriction or "")
        session = self.connection.read_client().create_read_session(
            parent=f"projects/{self.connection.project}", max_stream_count=self.max_streams,
            read_session=types.ReadSession(table=_session_table(table), read_options=options,
                                           data_format=types.DataFormat.ARROW))
        LOGGER.info("reading %s in %d streams", table, len(session.streams))
        for stream in session.streams:
            yield stream.name, session.arrow_schema.serialized_schema

    def _run_query(self) -> str:
        """Runs the query into an expiring table of the temp dataset (the Storage API reads tables)."""
        client = self.connection.client()
        dataset = f"{self.connection.project}.{self.connection.temp_dataset}"
        client.create_dataset(dataset, exists_ok=True)
        destination = f"{dataset}.query_{new_attempt().replace('-', '_')}"
        client.query(
            f"CREATE TABLE `{destination}` OPTIONS (expiration_timestamp = "
            f"TIMESTAMP_ADD(CURRENT_TIMESTAMP(), INTERVAL {STAGING_EXPIRY.days} DAY)) AS\n"
            f"{self.query}").result()
        return destination


class ReadStreamFn(beam.DoFn):
    """Reads one Storage Read stream as Arrow record batches and yields their rows as dicts."""

    def __init__(self, connection: BigQueryConnection) -> None:
        self.connection = connection
        self.rows_read = counter("bigquery_rows_read")

    def setup(self) -> None:
        self.client = self.connection.read_client()

    def process(self, stream: tuple[str, bytes]) -> Iterator[dict[str, Any]]:
        name, serialized_schema = stream
        schema = pa.ipc.read_schema(pa.py_buffer(serialized_schema))
        for response in self.client.read_rows(name):
            batch = pa.ipc.read_record_batch(
                pa.py_buffer(response.arrow_record_batch.serialized_record_batch), schema)
            self.rows_read.inc(batch.num_rows)
            yield from batch.to_pylist()


class ReadBigQueryRows(beam.PTransform):
    """A table or a query → rows (dicts), read in parallel Storage Read streams.

    Args:
        connection: project and endpoints.
        table: `project.dataset.table` to read (or give `query`).
        query: GoogleSQL whose result is read instead of a table.
        row_restriction: SQL filter applied by the Storage API (e.g. `day_restriction`).
        max_streams: upper bound on parallel streams (0: let BigQuery choose).
    """

    def __init__(self, connection: BigQueryConnection, table: str | None = None, query: str | None = None,
                 row_restriction: str | None = None, max_streams: int = 0) -> None:
        super().__init__()
        if (table is None) == (query is None):
            raise ValueError("give exactly one of table and query")
        self.read_fn = OpenReadSessionFn(connection, table and table_id(table), query, row_restriction,
                                         max_streams)
        self.connection = connection

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            pbegin
            | "Start" >> beam.Create([None])
            | "OpenReadSession" >> beam.ParDo(self.read_fn)
            | "SpreadStreams" >> beam.Reshuffle()
            | "ReadStreams" >> beam.ParDo(ReadStreamFn(self.connection))
        )


class ReadProductsFromBigQuery(beam.PTransform):
    """Products from a BigQuery table or query → `Routed` products and dead letters, like ReadProducts.

    Args:
        day: when given, only products whose `updated_at` falls on that day (UTC); a query's result
            must then have an `updated_at` column.
        run_id, optional_labels: as for `ReadProducts`.
    """

    def __init__(self, connection: BigQueryConnection, table: str | None = None, query: str | None = None,
                 day: dt.date | None = None, image_root: str | None = None, run_id: str | None = None,
                 optional_labels: bool = False) -> None:
        super().__init__()
        self.read = ReadBigQueryRows(connection, table, query, day and day_restriction(day))
        self.validate_fn = ValidateProductFn(image_root, run_id, optional_labels)

    def expand(self, pbegin: beam.pvalue.PBegin) -> Routed:
        validated = (
            pbegin
            | "ReadRows" >> self.read
            | "Validate" >> beam.ParDo(self.validate_fn).with_outputs(
                DEAD_LETTER, main=PRODUCTS)
        )
        return Routed(validated[PRODUCTS], validated[DEAD_LETTER])


def ensure_table(client: Any, table: str, schema_name: str) -> None:
    """Create `table` (and its dataset) partitioned by day on `partition_date` if it does not exist."""
    from google.cloud import bigquery

    project, dataset, _ = table.split(".")
    client.create_dataset(f"{project}.{dataset}", exists_ok=True)
    definition = bigquery.Table(table, schema=table_schema(schema_name))
    definition.time_partitioning = bigquery.TimePartitioning(type_="DAY", field=PARTITION_COLUMN)
    client.create_table(definition, exists_ok=True)


def _load_staging(client: Any, staging: str, schema_name: str, files: list[str]) -> None:
    from google.cloud import bigquery

    definition = bigquery.Table(staging, schema=table_schema(schema_name, partitioned=False))
    definition.expires = dt.datetime.now(dt.UTC) + STAGING_EXPIRY
    client.create_table(definition, exists_ok=True)
    parquet = bigquery.ParquetOptions()
    parquet.enable_list_inference = True

    def config(disposition: str) -> Any:
        return bigquery.LoadJobConfig(source_format="PARQUET", write_disposition=disposition,
                                      schema=table_schema(schema_name, partitioned=False),
                                      parquet_options=parquet)

    if files and all(path.startswith("gs://") for path in files):
        client.load_table_from_uri(files, staging, job_config=config("WRITE_TRUNCATE")).result()
        return
    for index, path in enumerate(files):
        with FileSystems.open(path) as handle:
            disposition = "WRITE_TRUNCATE" if index == 0 else "WRITE_APPEND"
            client.load_table_from_file(handle, staging, job_config=config(disposition)).result()


def commit_bigquery_partition(client: Any, table: str, schema_name: str, day: dt.date, files: list[str],
                              attempt: str, **lineage: Any) -> dict[str, Any]:
    """Make the rows of Parquet `files` the whole `partition_date = day` partition of `table`.

    The files are loaded into an expiring staging table, their row count checked against the files'
    footers, then one multi-statement transaction deletes the partition and inserts the staged rows:
    readers see the old or the new partition, a rerun replaces it, a failure before commit changes
    nothing. A retry after a successful commit is `CommitBigQueryPartitionFn`'s to recognise.

    Raises:
        RuntimeError: the staging table does not hold exactly the files' rows.
    """
    table = table_id(table)
    ensure_table(client, table, schema_name)
    project, dataset, name = table.split(".")
    staging = f"{project}.{dataset}.{name}__staging_{attempt.replace('-', '_')}"
    expected = sum(parquet_rows(path) for path in files)
    try:
        _load_staging(client, staging, schema_name, files)
        staged = client.get_table(staging).num_rows or 0
        if staged != expected:
            raise RuntimeError(f"staging table {staging} holds {staged} rows, the files {expected}")
        columns = ", ".join(f"`{field['name']}`" for field in schemas.load(schema_name))
        client.query(
            "BEGIN TRANSACTION;\n"
            f"DELETE FROM `{table}` WHERE {PARTITION_COLUMN} = DATE '{day.isoformat()}';\n"
            f"INSERT INTO `{table}` ({columns}, {PARTITION_COLUMN})\n"
            f"  SELECT {columns}, DATE '{day.isoformat()}' FROM `{staging}`;\n"
            "COMMIT TRANSACTION;").result()
    finally:
        client.delete_table(staging, not_found_ok=True)
    LOGGER.info("committed %s partition %s: %d rows", table, day, expected)
    return {**lineage, "table": table, "partition": f"date={day.isoformat()}", "rows": expected,
            "attempt": attempt, "committed_at": dt.datetime.now(dt.UTC).isoformat()}


class CommitBigQueryPartitionFn(beam.DoFn):
    """Commits the staged files of one partition to BigQuery once all are written (one element in).

    Idempotent: the commit's manifest is written into the attempt's staging folder (`_COMMITTED`)
    before its files are deleted, so a bundle retried after a successful commit returns that manifest
    instead of failing on the deleted files; a retry before the marker commits the same rows again.
    """

    def __init__(self, connection: BigQueryConnection, table: str, schema_name: str, day: dt.date,
                 attempt: str, staging_folder: str, run_id: str | None) -> None:
        self.connection = connection
        self.table = table
        self.schema_name = schema_name
        self.day = day
        self.attempt = attempt
        self.staging_folder = staging_folder
        self.run_id = run_id
        self.rows_committed = counter(f"{schema_name}_rows_committed")

    def process(self, written_files: list[str]) -> Iterator[dict[str, Any]]:
        marker = FileSystems.join(self.staging_folder, COMMITTED)
        if FileSystems.exists(marker):
            with FileSystems.open(marker) as handle:
                manifest = json.loads(handle.read())
            LOGGER.info("%s partition %s was committed by attempt %s already", self.table, self.day,
                        self.attempt)
        else:
            manifest = commit_bigquery_partition(
                self.connection.client(), self.table, self.schema_name, self.day,
                sorted(set(written_files)), self.attempt, run_id=self.run_id)
            with FileSystems.create(marker) as handle:
                handle.write(json.dumps(manifest).encode())
        staged = FileSystems.match([FileSystems.join(self.staging_folder, "**")])[0].metadata_list
        leftovers = [metadata.path for metadata in staged if metadata.path != marker]
        if leftovers:
            FileSystems.delete(leftovers)
        self.rows_committed.inc(manifest["rows"])
        yield manifest


class WriteBigQueryPartition(beam.PTransform):
    """Rows → the `partition_date = day` partition of BigQuery `table`, replaced atomically.

    Rows are written as Parquet under `temp_location` (gs:// on Dataflow, so BigQuery loads them from
    GCS), then committed by `commit_bigquery_partition`. Outputs the manifest (one dict).

    Args:
        table: `project.dataset.table`; created, partitioned on `partition_date`, when missing.
        schema_name: the `schemas/` table schema of the rows (categorized, dead_letters, ...).
    """

    def __init__(self, connection: BigQueryConnection, table: str, schema_name: str, day: dt.date,
                 temp_location: str, run_id: str | None = None) -> None:
        super().__init__()
        self.connection = connection
        self.table = table_id(table)
        self.schema_name = schema_name
        self.day = day
        self.run_id = run_id
        self.attempt = new_attempt()
        self.staging_folder = FileSystems.join(
            temp_location, "linnet-bigquery", f"{self.table}.{day.isoformat()}.{self.attempt}")

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        return (
            staged(rows, FileSystems.join(self.staging_folder, "part"), self.schema_name)
            | "Commit" >> beam.ParDo(CommitBigQueryPartitionFn(
                self.connection, self.table, self.schema_name, self.day, self.attempt,
                self.staging_folder, self.run_id))
        )


class WriteBigQueryPartitions(beam.PTransform):
    """`{table: rows}` → partition `day` of each table `dataset.table` (`WriteBigQueryPartition`, one
    transaction per table); outputs the manifests.

    Args:
        schemas: table name → its `schemas/` schema name.
    """

    def __init__(self, connection: BigQueryConnection, dataset: str, schemas: dict[str, str], day: dt.date,
                 temp_location: str, run_id: str | None = None) -> None:
        super().__init__()
        self.writes = {table: WriteBigQueryPartition(connection, f"{dataset}.{table}", schema, day,
                                                     temp_location, run_id)
                       for table, schema in schemas.items()}

    def expand(self, tables: dict[str, beam.PCollection]) -> beam.PCollection:
        return ([tables[table] | f"Write[{table}]" >> write for table, write in self.writes.items()]
                | "Manifests" >> beam.Flatten())
