"""Embedding cache and the product embedder's use of it: a hit skips the model, a torn file is a miss."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from linnet_core import records
from linnet_core.encoders.cache import EmbeddingCache, content_hash
from linnet_core.encoders.embedder import ProductEmbedder, _encode_isolating, _encode_unique
from linnet_core.encoders.image import ImageEncoder
from linnet_core.encoders.text import load_text_encoder
from pipelines import defaults

pytestmark = pytest.mark.shared_data
JPEG = defaults.SHARED_DATA / "products" / "images" / "100fp2010_c797e63e-7927-48cb-b869-07a8e1b7a3c8.jpg"


def test_round_trip_miss_and_torn_file(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, "text/model/onnx-int8/128/abc", 4)
    key = content_hash("Red scarf")
    assert cache.get(key) is None
    cache.put(key, np.array([1, 2, 3, 4], np.float32))
    np.testing.assert_array_equal(cache.get(key), [1, 2, 3, 4])
    assert not list(tmp_path.rglob("*.tmp"))
    next(tmp_path.rglob("*.f32")).write_bytes(b"\x00" * 7)
    assert cache.get(key) is None
    assert EmbeddingCache(tmp_path, "text/other", 4).get(key) is None


def test_bad_cache_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="local directory"):
        EmbeddingCache("gs://bucket/cache", "id", 4)
    with pytest.raises(ValueError, match="size 3"):
        EmbeddingCache(tmp_path, "id", 4).put("ab" * 32, np.zeros(3))


def test_content_hash_is_of_exact_bytes() -> None:
    assert content_hash("é") == content_hash("é".encode())
    assert content_hash("Red scarf") != content_hash("Red scarf ")


def test_one_failing_item_costs_only_itself() -> None:
    def encode(items: list) -> np.ndarray:
        return np.stack([np.full(2, 1.0 / item) for item in items])

    outcomes = _encode_isolating(encode, [1, 0, 4])
    np.testing.assert_array_equal(outcomes[0], [1.0, 1.0])
    assert isinstance(outcomes[1], Exception)
    np.testing.assert_array_equal(outcomes[2], [0.25, 0.25])


def test_second_pass_is_served_from_the_cache(tmp_path: Path, prepared_models: dict[str, str],
                                              models_dir: str) -> None:
    embedder = ProductEmbedder(load_text_encoder(prepared_models["text_model"], threads=2),
                               ImageEncoder(models_dir, threads=2), str(tmp_path))
    batch = [records.normalize({"product_id": "a", "title": "Wool socks", "image_uris": [str(JPEG)]}),
             records.normalize({"product_id": "b", "title": "Garden hose 20 m"})]
    first = embedder.embed(batch, lambda uri: Path(uri).read_bytes())
    second = embedder.embed(batch, lambda uri: Path(uri).read_bytes())
    assert [r.cache_hits for r in first] == [[], []]
    assert [r.cache_hits for r in second] == [["text", "image"], ["text"]]
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.record["text_embedding"], b.record["text_embedding"])
        np.testing.assert_array_equal(a.record["image_embedding"], b.record["image_embedding"])


def test_each_distinct_input_is_encoded_once_and_cached(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def encode(items: list[str]) -> np.ndarray:
        calls.append(items)
        return np.stack([np.full(2, float(len(item))) for item in items])

    cache = EmbeddingCache(tmp_path, "id", 2)
    keys = [content_hash(text) for text in ("ab", "abc", "ab")]
    outcomes = _encode_unique(encode, keys, ["ab", "abc", "ab"], cache)
    assert calls == [["ab", "abc"]]
    assert [float(vector[0]) for vector in outcomes] == [2.0, 3.0, 2.0]
    np.testing.assert_array_equal(cache.get(keys[1]), [3.0, 3.0])


@pytest.mark.subprocesses
def test_fast_paths_need_no_torch(models_dir: str) -> None:
    code = ("import sys; from pathlib import Path; "
            "from linnet_core.encoders.embedder import ProductEmbedder; "
            "from linnet_core.encoders.image import ImageEncoder; "
            "from linnet_core.encoders.text import load_text_encoder; "
            "from pipelines import defaults; "
            "text = load_text_encoder(str(defaults.MODELS / 'multilingual-e5-small'), threads=1); "
            "e = ProductEmbedder(text, "
            "ImageEncoder(defaults.MODELS, threads=1)); "
            f"r = e.embed([{{'product_id': 'a', 'title': 'Mug', 'image_uris': [{str(JPEG)!r}]}}], "
            "lambda uri: Path(uri).read_bytes())[0]; "
            "assert r.image_status == 'ok', r; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
