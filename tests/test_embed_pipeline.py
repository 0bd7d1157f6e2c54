"""EmbedProducts on a TestPipeline: every input comes out once, as an embedded record or a dead letter."""

from __future__ import annotations

import json
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from linnet_core import features, records
from linnet_core.encoders.image import ImageError
from linnet_core.encoders.text import DEFAULT_MAX_TOKENS
from linnet_core.training_data import ENCODERS_JSON
from pipelines import defaults
from pipelines.counters import NAMESPACE
from pipelines.embed import EmbedConfig, EmbedProducts, load_embedder, read_uri

pytestmark = pytest.mark.shared_data
PHOTOS = defaults.SHARED_DATA / "products" / "images"
JPEG = str(PHOTOS / "100fp2010_c797e63e-7927-48cb-b869-07a8e1b7a3c8.jpg")
JPEG_NAMED_WEBP = str(PHOTOS / "1247148-2.webp")


@pytest.fixture
def products(tmp_path: Path) -> list:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"<html>not a photo</html>")
    missing = str(tmp_path / "gone.jpg")
    raws = [
        {"product_id": "ok", "title": "Ceramic coffee mug, 350 ml", "image_uris": [JPEG]},
        {"product_id": "by-content", "title": "Kinderfahrrad 16 Zoll", "image_uris": [JPEG_NAMED_WEBP]},
        {"product_id": "missing", "title": "Bolso de cuero", "image_uris": [missing]},
        {"product_id": "unreadable", "title": "Sac à dos", "image_uris": [str(bad), str(tmp_path)]},
        {"product_id": "second-photo", "title": "Lampe de chevet", "image_uris": [missing, JPEG]},
        {"product_id": "text-only", "title": "Organic green tea, 100 bags", "tags": "tea, organic"},
    ]
    return [records.normalize(raw) for raw in raws] + [{"title": "no id"}, "not a record"]


EXPECTED = [("ok", "ok", 1.0), ("by-content", "ok", 1.0), ("missing", "missing_file", 0.0),
            ("unreadable", "unreadable", 0.0), ("second-photo", "ok", 1.0), ("text-only", "no_image", 0.0)]


def _summary(record: dict) -> tuple:
    text, image = record[features.TEXT_EMBEDDING], record[features.IMAGE_EMBEDDING]
    title = record[features.TITLE_EMBEDDING]
    for vector in (text, title):
        assert vector.shape == (384,) and vector.dtype == np.float32
        assert abs(np.linalg.norm(vector) - 1) < 1e-4
    # A record with tags has a full text beyond its title; one with a title only embeds it twice.
    same_text = features.product_text(record) == features.title_text(record)
    assert np.allclose(text, title, atol=1e-6) == same_text
    assert image.shape == (1280,) and image.dtype == np.float32 and np.isfinite(image).all()
    assert bool(image.any()) == (record[features.IMAGE_PRESENT] == 1.0)
    return record["product_id"], record["image_status"], record[features.IMAGE_PRESENT]


def _dead_summary(row: dict) -> tuple:
    return row["product_id"], row["stage"], row["reason"], row["run_id"]


def test_every_input_is_embedded_or_dead_lettered(products: list, models_dir: str) -> None:
    cfg = EmbedConfig(models_dir=models_dir, batch_size=4, threads=2)
    with TestPipeline() as pipeline:
        out = pipeline | beam.Create(products) | EmbedProducts(cfg, run_id="run-1")
        assert_that(out.records | beam.Map(_summary), equal_to(EXPECTED), label="CheckEmbedded")
        assert_that(out.dead_letter | beam.Map(_dead_summary),
                    equal_to([(None, "embed", "embedding_failed", "run-1")] * 2), label="CheckDeadLetters")


def _counters(result) -> dict[str, int]:
    query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    return {counter.key.metric.name: counter.committed for counter in query["counters"]}


def test_counters_and_cache_hits_on_a_second_run(products: list, models_dir: str, tmp_path: Path) -> None:
    options = PipelineOptions([f"--models_dir={models_dir}", f"--embedding_cache={tmp_path / 'cache'}",
                               "--embed_batch_size=3", "--encoder_threads=2"])
    runs = []
    for _ in range(2):
        pipeline = TestPipeline(options=options)
        _ = pipeline | beam.Create(products) | EmbedProducts.from_options(options)
        result = pipeline.run()
        result.wait_until_finish()
        runs.append(_counters(result))
    first, second = runs
    assert first["products_embedded"] == 6 and first["embed_dead_letters"] == 2
    statuses = ("image_ok", "image_missing_file", "image_unreadable", "image_no_image")
    assert [first[name] for name in statuses] == [3, 1, 1, 1]
    assert first.get("text_cache_hits", 0) == 0
    assert second["text_cache_hits"] == 6 and second["image_cache_hits"] == 3
    assert any((tmp_path / "cache").rglob("*.f32"))


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="embed_batch_size"):
        EmbedConfig(batch_size=0)
    with pytest.raises(ValueError, match="text_engine"):
        EmbedConfig(text_engine="tensorrt")
    with pytest.raises(ValueError, match="max_tokens"):
        EmbedConfig(max_tokens=1024)
    with pytest.raises(ValueError, match="local directory"):
        EmbedConfig(cache_dir="gs://bucket/embeddings")
    assert EmbedConfig.from_options(PipelineOptions(["--embedding_cache=none"])).cache_dir is None


def test_read_uri_tells_missing_from_present(tmp_path: Path) -> None:
    gz = tmp_path / "photo.jpg.gz"
    gz.write_bytes(b"raw bytes, never decompressed")
    assert read_uri(str(gz)) == b"raw bytes, never decompressed"
    with pytest.raises(FileNotFoundError):
        read_uri(str(tmp_path / "nope.jpg"))
    with pytest.raises(ImageError) as error:
        read_uri(str(tmp_path))
    assert error.value.status == "unreadable"


def test_reference_engines_by_flag_agree_with_the_fast_path(models_dir: str) -> None:
    batch = [records.normalize({"product_id": "a", "title": "Edelstahl-Wasserkocher 1,7 l, kabellos",
                                "description": "Schnellkochend, mit Kalkfilter. " * 20,
                                "image_uris": [JPEG]})]
    fast_embedder = load_embedder(EmbedConfig(models_dir=models_dir, threads=2))
    fast = fast_embedder.embed(batch, read_uri)[0].record
    options = PipelineOptions([f"--models_dir={models_dir}", "--text_engine=torch", "--image_engine=torch",
                               "--embedding_cache=none", "--encoder_threads=2"])
    reference_embedder = load_embedder(EmbedConfig.from_options(options))
    assert "torch-fp32" in reference_embedder.text.encoder_id
    reference = reference_embedder.embed(batch, read_uri)[0].record
    assert float(fast["text_embedding"] @ reference["text_embedding"]) >= 0.98
    assert float(fast["title_embedding"] @ reference["title_embedding"]) >= 0.98
    title_alone = fast_embedder.text.encode([features.title_text(batch[0])])[0]
    np.testing.assert_allclose(fast["title_embedding"], title_alone, atol=1e-6)
    image_a, image_b = fast["image_embedding"], reference["image_embedding"]
    assert float(image_a @ image_b / np.linalg.norm(image_a) / np.linalg.norm(image_b)) > 0.9999


def test_a_scored_model_keeps_the_token_cut_its_training_data_had(tmp_path: Path) -> None:
    (tmp_path / ENCODERS_JSON).write_text(json.dumps(
        {"text": "text/multilingual-e5-small/onnx-fp32/128/63c5", "image": "image/mobilenet_v2/onnx/e4"}))
    model = str(tmp_path)
    assert EmbedConfig.from_options(PipelineOptions([]), model).max_tokens == 128
    assert EmbedConfig.from_options(PipelineOptions(["--max_tokens", "128"]), model).max_tokens == 128
    with pytest.raises(ValueError, match="cut at 128 tokens"):
        EmbedConfig.from_options(PipelineOptions(["--max_tokens", "64"]), model)
    # No model, or a model without the record: the default cut.
    assert EmbedConfig.from_options(PipelineOptions([])).max_tokens == DEFAULT_MAX_TOKENS
    older = str(tmp_path / "older")
    assert EmbedConfig.from_options(PipelineOptions([]), older).max_tokens == DEFAULT_MAX_TOKENS
