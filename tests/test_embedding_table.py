"""The embedding table: joined by content hash inside the pipeline, appended as committed partitions
(tables of loose legacy parts still read), and a second run over the same products (local or gs://)
encodes nothing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

import schemas
from linnet_core import features, records
from linnet_core.encoders.cache import content_hash
from pipelines import defaults
from pipelines.counters import NAMESPACE
from pipelines.embed import EmbedConfig, EmbedProducts, read_uri
from pipelines.embedding_table import SCHEMA, AppendToEmbeddingTable, LookUpEmbeddings, table_files, table_row

pytestmark = pytest.mark.shared_data
PHOTOS = defaults.SHARED_DATA / "products" / "images"
JPEG = str(PHOTOS / "100fp2010_c797e63e-7927-48cb-b869-07a8e1b7a3c8.jpg")


def _products(tmp_path: Path) -> list[dict]:
    raws = [
        {"product_id": "mug", "title": "Ceramic coffee mug, 350 ml", "image_uris": [JPEG]},
        {"product_id": "gallery", "title": "Lampe de chevet",
         "image_uris": [str(tmp_path / "gone.jpg"), JPEG]},
        {"product_id": "tea", "title": "Organic green tea, 100 bags", "tags": "tea, organic"},
    ]
    return [records.normalize(raw) for raw in raws]


def _write_part(directory: Path, rows: list[dict]) -> None:
    """A part as appends wrote it before they were partitions: loose in the table folder."""
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schemas.arrow_schema(SCHEMA)),
                   directory / "part-a-00000.parquet")


def test_records_join_the_vectors_stored_for_their_content(tmp_path: Path) -> None:
    products = _products(tmp_path)
    mug_title, photo = content_hash("Ceramic coffee mug, 350 ml"), content_hash(Path(JPEG).read_bytes())
    now = dt.datetime.now(dt.UTC)
    _write_part(tmp_path / "table", [table_row("text/e5", mug_title, np.ones(4), "r", now),
                                     table_row("image/m", photo, np.full(2, 2.0), "r", now),
                                     table_row("text/e5", content_hash("unrelated"), np.ones(4), "r", now)])

    def summary(keyed: tuple) -> tuple:
        product_id, (record, stored) = keyed
        found = sorted((key == photo, encoder_id, vector.tolist())
                       for key, vectors in stored.vectors.items() for encoder_id, vector in vectors.items())
        return product_id, record["product_id"], stored.keys.photo_uri, found

    with TestPipeline() as pipeline:
        joined = (pipeline | beam.Create([(p["product_id"], p) for p in products])
                  | LookUpEmbeddings(str(tmp_path / "table"), read_uri) | beam.Map(summary))
        # Title-only "mug": both its texts are the title; "gallery" skips its missing photo to key the next.
        assert_that(joined, equal_to([
            ("mug", "mug", JPEG, [(False, "text/e5", [1.0] * 4), (True, "image/m", [2.0, 2.0])]),
            ("gallery", "gallery", JPEG, [(True, "image/m", [2.0, 2.0])]),
            ("tea", "tea", None, [])]))


def test_an_empty_table_folder_joins_nothing(tmp_path: Path) -> None:
    with TestPipeline() as pipeline:
        joined = (pipeline | beam.Create([("tea", _products(tmp_path)[2])])
                  | LookUpEmbeddings(str(tmp_path / "nothing-yet"), read_uri)
                  | beam.MapTuple(lambda product_id, pair: (product_id, dict(pair[1].vectors))))
        assert_that(joined, equal_to([("tea", {})]))


def test_the_table_is_its_committed_appends_and_any_legacy_parts(tmp_path: Path) -> None:
    table, now = tmp_path / "table", dt.datetime.now(dt.UTC)
    _write_part(table, [table_row("text/e5", content_hash("old"), np.ones(4), "before", now)])
    with TestPipeline() as pipeline:
        _ = (pipeline | beam.Create([("text/e5", content_hash("new"), np.ones(4))])
             | AppendToEmbeddingTable(str(table), "r"))
    uncommitted = table / "vectors" / "run=killed"  # a folder no commit finished: no manifest
    _write_part(uncommitted, [table_row("text/e5", content_hash("lost"), np.ones(4), "killed", now)])
    [append] = [path for path in (table / "vectors").glob("run=*") if path != uncommitted]
    assert table_files(str(table)) == [str(table / "part-a-00000.parquet"),
                                       *map(str, sorted(append.glob("*.parquet")))]


def _run(products: list[dict], cfg: EmbedConfig) -> dict[str, int]:
    pipeline = TestPipeline()
    out = pipeline | beam.Create(products) | EmbedProducts(cfg, run_id="t")
    assert_that(out.records | beam.Map(lambda record: record["product_id"]),
                equal_to([p["product_id"] for p in products]))
    result = pipeline.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    return {c.key.metric.name: c.committed for c in counters}


def test_second_run_encodes_nothing_and_a_change_only_itself(tmp_path: Path, models_dir: str) -> None:
    table = tmp_path / "table"
    cfg = EmbedConfig(models_dir=models_dir, batch_size=2, threads=2, table_dir=str(table))
    products = _products(tmp_path)
    first = _run(products, cfg)
    # Distinct content: mug's title (both its texts), gallery's title, tea's two texts, one photo.
    assert first["products_encoded"] == 3 and first["table_vectors_appended"] == 5
    second = _run(products, cfg)
    assert second.get("products_encoded", 0) == 0 and second.get("table_vectors_appended", 0) == 0
    assert second["text_table_hits"] == 3 and second["image_table_hits"] == 2
    changed = [dict(products[0], title="Ceramic coffee mug, 500 ml"), *products[1:]]
    third = _run(changed, cfg)
    assert third["products_encoded"] == 1 and third["table_vectors_appended"] == 1
    assert third["image_table_hits"] == 2 and third["text_table_hits"] == 2
    appends = sorted((table / "vectors").glob("run=*"))
    assert len(appends) == 2, "a run that appends nothing adds no partition"
    assert all((append / "_SUCCESS").is_file() for append in appends)
    assert not list(table.glob("vectors/_staging/*")), "staging is cleared once the append is committed"
    stored = pq.read_table(str(table / "vectors"))
    assert stored.num_rows == 6 and set(stored.column("run_id").to_pylist()) == {"t"}
    title = content_hash(features.title_text(changed[0]))
    row = stored.filter(pa.compute.equal(stored["content_hash"], title)).to_pylist()[0]
    vector = np.frombuffer(row["vector"], "<f4")
    assert vector.shape == (384,) and abs(np.linalg.norm(vector) - 1) < 1e-4


@pytest.mark.slow
@pytest.mark.emulator
@pytest.mark.subprocesses
def test_the_table_works_on_gcs(tmp_path: Path, models_dir: str) -> None:
    from gcs_emulator import run_scenario

    result = run_scenario(Path(__file__).with_name("gcs_embedding_table_scenario.py"), tmp_path)
    first, second = result["first"], result["second"]
    assert first["products_encoded"] == 2 and first["table_vectors_appended"] == 4
    assert second.get("products_encoded", 0) == 0 and second.get("table_vectors_appended", 0) == 0
    assert second["text_table_hits"] == 2 and second["image_table_hits"] == 1
    folders = {path.rsplit("/", 1)[0] for path in result["objects"]}
    names = sorted(path.rsplit("/", 1)[1] for path in result["objects"])
    assert len(folders) == 1 and "/vectors/run=" in folders.pop(), "one committed append, nothing staged"
    assert names[0].endswith(".parquet") and names[1:] == ["_SUCCESS"]
