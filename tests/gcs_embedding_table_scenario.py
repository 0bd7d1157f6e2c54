"""The embedding table on gs:// (run by test_embedding_table in a child process): two runs over the same
products, the second encodes nothing."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter

from linnet_core import records
from pipelines import defaults
from pipelines.counters import NAMESPACE
from pipelines.embed import EmbedConfig, EmbedProducts

TABLE = "gs://linnet-test/embeddings"
PHOTOS = defaults.SHARED_DATA / "products" / "images"
JPEG = str(PHOTOS / "100fp2010_c797e63e-7927-48cb-b869-07a8e1b7a3c8.jpg")


def _run(cfg: EmbedConfig) -> dict[str, int]:
    products = [records.normalize({"product_id": "mug", "title": "Ceramic coffee mug", "image_uris": [JPEG]}),
                records.normalize({"product_id": "tea", "title": "Green tea", "tags": "tea, organic"})]
    pipeline = beam.Pipeline()
    _ = pipeline | beam.Create(products) | EmbedProducts(cfg, run_id="gcs")
    result = pipeline.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    return {counter.key.metric.name: counter.committed for counter in counters}


def main(workdir: str) -> dict:
    cfg = EmbedConfig(models_dir=str(defaults.MODELS), batch_size=2, threads=2, table_dir=TABLE)
    first, second = _run(cfg), _run(cfg)
    objects = sorted(meta.path for meta in FileSystems.match([f"{TABLE}/**"])[0].metadata_list)
    return {"first": first, "second": second, "objects": objects}
