"""Category embeddings for the taxonomy prior: the real text encoder on the tiny taxonomy's paths,
the embedding cache, the .npz round trip, and the per-level segments of the subtree max."""

from __future__ import annotations

import numpy as np
import pytest

from linnet_core.category_prior import (
    CategoryEmbeddings,
    CategoryEmbeddingsError,
    embed_categories,
    level_segments,
    node_ids,
)
from linnet_core.encoders.text import OnnxTextEncoder
from linnet_core.taxonomy import Taxonomy


@pytest.fixture(scope="module")
def encoder(prepared_models: dict[str, str]) -> OnnxTextEncoder:
    return OnnxTextEncoder(prepared_models["text_model"], threads=2)


def test_paths_are_encoded_by_the_products_encoder_and_cached(tiny: Taxonomy, encoder, tmp_path) -> None:
    embeddings = embed_categories(tiny, encoder.encode, encoder.encoder_id, encoder.dim, str(tmp_path))
    assert embeddings.ids.tolist() == [1, 2, 3, 4, 5, 10, 11, 12, 13] == node_ids(tiny)
    direct = encoder.encode([tiny.node(i).full_path for i in node_ids(tiny)])
    np.testing.assert_allclose(embeddings.vectors, direct, atol=1e-6)
    assert embeddings.encoder_id == encoder.encoder_id and embeddings.taxonomy_fingerprint == tiny.fingerprint

    def must_not_encode(texts):
        raise AssertionError(f"cache miss for {texts}")

    cached = embed_categories(tiny, must_not_encode, encoder.encoder_id, encoder.dim, str(tmp_path))
    np.testing.assert_array_equal(cached.vectors, embeddings.vectors)
    # Zero-shot: a German dog leash is closer to "Animals > Pets > Dogs" than to any Toys path.
    product = encoder.encode(["Hundeleine aus Leder, 2 m, für große Hunde"])[0]
    cosines = dict(zip(embeddings.ids.tolist(), embeddings.vectors @ product, strict=True))
    assert cosines[3] > max(cosines[i] for i in (10, 11, 12, 13))


def test_npz_round_trip_and_taxonomy_check(tiny: Taxonomy, gpt: Taxonomy, tmp_path) -> None:
    vectors = np.random.default_rng(0).normal(size=(9, 4)).astype(np.float32)
    embeddings = CategoryEmbeddings(np.array(node_ids(tiny)), vectors, "enc/1", tiny.fingerprint)
    (tmp_path / "c.npz").write_bytes(embeddings.to_bytes())
    loaded = CategoryEmbeddings.load(tmp_path / "c.npz")
    np.testing.assert_array_equal(loaded.vectors, vectors)
    assert loaded.ids.tolist() == node_ids(tiny) and loaded.encoder_id == "enc/1"
    loaded.check(tiny)
    with pytest.raises(CategoryEmbeddingsError):
        loaded.check(gpt)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(CategoryEmbeddingsError):
        CategoryEmbeddings.load(tmp_path / "bad.npz")
    with pytest.raises(CategoryEmbeddingsError):
        CategoryEmbeddings(np.arange(3), vectors, "enc/1", tiny.fingerprint)


def test_level_segments_by_hand(tiny: Taxonomy) -> None:
    # Nodes 1 Animals, 2 Pets, 3 Dogs, 4 Cats, 5 Farm, 10 Toys, 11 Dolls, 12 Puzzles, 13 Jigsaw.
    # Level classes: [Animals, Toys]; [Pets, Farm, Dolls, Puzzles]; [Dogs, Cats, Jigsaw]. A node
    # shallower than the level goes to the dummy segment n_k.
    ids = node_ids(tiny)
    assert level_segments(tiny, ids, 1).tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    assert level_segments(tiny, ids, 2).tolist() == [4, 0, 0, 0, 1, 4, 2, 3, 3]
    assert level_segments(tiny, ids, 3).tolist() == [3, 3, 0, 1, 3, 3, 3, 3, 2]
