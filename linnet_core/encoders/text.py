"""Text encoder: multilingual-e5-small through `transformers` (torch fp32 reference) or ONNX Runtime
(fp32, the default, or int8).

Both engines use the folder's one tokenizer file (`query: ` prefix, truncation at `max_tokens`, ids checked
equal in the tests) and the same pooling (mean over the attention mask, then L2 norm), so they differ only
in how the network runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np

from linnet_core.encoders.runtime import fingerprint, single_threaded_session

QUERY_PREFIX = "query: "
# Where the full product text is cut. Its description comes last, so the cut takes only description, and
# the title is embedded whole on its own: 64 tokens encode about a third faster than 128 at the same
# quality in the store-grouped cross-validation (docs/experiments/2026-12-07-text-token-budget.md).
DEFAULT_MAX_TOKENS = 64
TEXT_MODEL_NAME = "multilingual-e5-small"
ONNX_FP32 = "onnx/model.onnx"
ONNX_INT8 = "onnx/model_int8.onnx"
# "onnx" runs fp32: int8 kernels differ between CPUs (AVX2 vs AVX-512 VNNI), and e5's narrow cosines turned
# those differences into hF1 swings of 0.1 between machines downstream (../shared/notes/stack.md); fp32
# agrees across CPUs to ~1e-6 at half the int8 speed. "onnx-int8" stays for throughput-bound runs.
ONNX_FILES = {"onnx": ONNX_FP32, "onnx-int8": ONNX_INT8}
ENGINES = (*ONNX_FILES, "torch")
TOKENIZER_FILE = "tokenizer.json"


def engine_files(engine: str) -> tuple[str, ...]:
    """What `engine` reads of the model folder, by relative name (empty: all of it, for torch); a
    remote copy (a Dataflow worker's) fetches only these, not the whole folder with its torch weights."""
    return (TOKENIZER_FILE, ONNX_FILES[engine]) if engine in ONNX_FILES else ()


class TextEncoder(Protocol):
    """What the pipeline needs of a text encoder."""

    encoder_id: str
    dim: int
    max_tokens: int

    def token_ids(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Unpadded token ids per text, (1, length) int64."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised rows."""


def mean_pool_normalize(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of token vectors under the attention mask, then L2 norm (the e5 recipe)."""
    weights = mask[..., None].astype(np.float32)
    pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)


def text_encoder_id(model_name: str, engine: str, max_tokens: int, version: str) -> str:
    """`text/<model>/<engine>/<max tokens>/<version>`: what keys cached and stored vectors and what
    MODEL/encoders.json records, so scoring can tell the cut a model's training data had."""
    return f"text/{model_name}/{engine}/{max_tokens}/{version}"


def max_tokens_of(encoder_id: str) -> int | None:
    """The cut a `text_encoder_id` names; None for an id without one."""
    parts = encoder_id.split("/")
    return int(parts[-2]) if len(parts) >= 2 and parts[-2].isdigit() else None


def _check_max_tokens(max_tokens: int) -> int:
    if max_tokens < 3:
        raise ValueError(f"max_tokens must be at least 3, got {max_tokens}")
    return max_tokens


class TorchTextEncoder:
    """The reference path: `AutoTokenizer` and `AutoModel` (fp32 torch), from a local folder or a hub id."""

    def __init__(self, model: str, max_tokens: int = DEFAULT_MAX_TOKENS, threads: int | None = None) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.max_tokens = _check_max_tokens(max_tokens)
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.network = AutoModel.from_pretrained(model).eval()
        self.dim = int(self.network.config.hidden_size)
        local = Path(model)
        files = sorted(local.glob("*.safetensors")) if local.is_dir() else []
        version = fingerprint(files) if files else model.replace("/", "_")
        self.encoder_id = text_encoder_id(local.name, "torch-fp32", max_tokens, version)

    def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and attention mask, int64, padded to the longest text of the batch."""
        batch = self.tokenizer([QUERY_PREFIX + text for text in texts], padding=True, truncation=True,
                               max_length=self.max_tokens, return_tensors="np")
        return batch["input_ids"].astype(np.int64), batch["attention_mask"].astype(np.int64)

    def token_ids(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Unpadded token ids of each text, as (1, length) int64 arrays."""
        ids, mask = self.tokenize(texts)
        return [row[None, :length] for row, length in zip(ids, mask.sum(axis=1), strict=True)]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        ids, mask = self.tokenize(texts)
        with self._torch.inference_mode():
            hidden = self.network(input_ids=self._torch.from_numpy(ids),
                                  attention_mask=self._torch.from_numpy(mask)).last_hidden_state
        return mean_pool_normalize(hidden.numpy(), mask)


class OnnxTextEncoder:
    """The fast path: an ONNX export that `linnet prepare-models` writes beside the HF weights (fp32 or int8).

    It reads the folder's `tokenizer.json` with the `tokenizers` library (what `AutoTokenizer` wraps; the
    tests check both give the same ids), so workers import neither transformers nor torch, both slow to
    import and large in memory.

    Each text runs alone, on `threads` concurrent single-threaded runs of one session. Dynamic int8
    quantization scales activations per tensor, so batching texts would make an embedding depend on its
    batch-mates, which a content-keyed cache cannot allow (fp32 padding would shift it slightly too); and
    concurrent single-threaded runs were faster than one multi-threaded batched run
    (docs/experiments/2026-11-25-encoder-runtime.md).
    """

    def __init__(self, model: str, max_tokens: int = DEFAULT_MAX_TOKENS, threads: int | None = None,
                 onnx_file: str = ONNX_FP32) -> None:
        path = Path(model) / onnx_file
        if not path.exists():
            raise FileNotFoundError(f"no ONNX export at {path}: run `linnet prepare-models` or use the torch "
                                    f"engine")
        from tokenizers import Tokenizer

        self.max_tokens = _check_max_tokens(max_tokens)
        self.tokenizer = Tokenizer.from_file(str(Path(model) / TOKENIZER_FILE))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_tokens)
        self.session = single_threaded_session(path)
        self.dim = int(self.session.get_outputs()[0].shape[-1])
        self._pool = ThreadPoolExecutor(threads or os.cpu_count() or 1, thread_name_prefix="onnx-text")
        engine = "onnx-int8" if onnx_file == ONNX_INT8 else "onnx-fp32"
        self.encoder_id = text_encoder_id(Path(model).name, engine, max_tokens, fingerprint([path]))

    def token_ids(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Unpadded token ids of each text (prefix and `<s>`/`</s>` included), as (1, length) int64."""
        batch = self.tokenizer.encode_batch([QUERY_PREFIX + text for text in texts])
        return [np.asarray([encoding.ids], dtype=np.int64) for encoding in batch]

    def _encode_one(self, ids: np.ndarray) -> np.ndarray:
        mask = np.ones_like(ids)
        (hidden,) = self.session.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask})
        return mean_pool_normalize(hidden, mask)[0]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.stack(list(self._pool.map(self._encode_one, self.token_ids(texts))))


def load_text_encoder(model: str, engine: str = "onnx", max_tokens: int = DEFAULT_MAX_TOKENS,
                      threads: int | None = None) -> TextEncoder:
    """The text encoder for `model` (directory or hub id) on `engine` (`onnx` fp32 and `onnx-int8` fast,
    `torch` the reference).

    Raises:
        ValueError: unknown engine.
        FileNotFoundError: the ONNX engine was asked for a model without an ONNX export.
    """
    if engine in ONNX_FILES:
        return OnnxTextEncoder(model, max_tokens, threads, ONNX_FILES[engine])
    if engine == "torch":
        return TorchTextEncoder(model, max_tokens, threads)
    raise ValueError(f"unknown text engine {engine!r}; expected one of {ENGINES}")
