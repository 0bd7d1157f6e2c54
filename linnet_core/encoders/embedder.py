"""Embedding of product records: two texts always, the first usable photo when there is one, with the cache.

The pipeline hands in a batch of records and a function that reads image bytes (Beam's FileSystems there,
plain files in tests); this module decides every outcome, so batch and online paths cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from linnet_core import features
from linnet_core.encoders.cache import EmbeddingCache, content_hash
from linnet_core.encoders.image import (
    STATUS_MISSING,
    STATUS_NO_IMAGE,
    STATUS_OK,
    STATUS_UNREADABLE,
    ImageEncoder,
    ImageError,
    load_pixels,
)
from linnet_core.encoders.text import TextEncoder

IMAGE_STATUS = "image_status"
IMAGE_STATUSES = (STATUS_OK, STATUS_NO_IMAGE, STATUS_MISSING, STATUS_UNREADABLE)
# A product's photos are tried in order; past the third, a broken gallery is not worth more reads.
MAX_IMAGES_TRIED = 3


@dataclass
class Embedded:
    """The outcome for one record: the embedded record, or the error that sends it to dead letters."""

    record: dict[str, Any] | None
    error: str | None = None
    image_status: str = STATUS_NO_IMAGE
    cache_hits: list[str] = field(default_factory=list)


@dataclass
class _Photo:
    """A product's chosen photo on its way through the cache and the image encoder."""

    status: str
    key: str | None = None
    pixels: np.ndarray | None = None
    vector: np.ndarray | Exception | None = None
    cached: bool = False


def _encode_isolating(encode: Callable[[list], np.ndarray], items: list) -> list[np.ndarray | Exception]:
    """Encode a batch; if it fails, encode item by item so one bad input costs only itself."""
    if not items:
        return []
    try:
        return list(encode(items))
    except Exception:
        outcomes: list[np.ndarray | Exception] = []
        for item in items:
            try:
                outcomes.append(encode([item])[0])
            except Exception as error:
                outcomes.append(error)
        return outcomes


def _encode_unique(encode: Callable[[list], np.ndarray], keys: list[str], inputs: list,
                   cache: EmbeddingCache | None) -> list[np.ndarray | Exception]:
    """Outcomes for `inputs`, encoding each distinct key once (variants often share a photo or a text) and
    caching what succeeded."""
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    outcomes = dict(zip(first, _encode_isolating(encode, [inputs[i] for i in first.values()]), strict=True))
    if cache:
        for key, outcome in outcomes.items():
            if not isinstance(outcome, Exception):
                cache.put(key, outcome)
    return [outcomes[key] for key in keys]


class ProductEmbedder:
    """Text and image encoders plus optional caches (one per encoder, keyed by content hash).

    Photos are read and decoded on `threads` threads (I/O and Pillow's decoders release the GIL).
    """

    def __init__(self, text: TextEncoder, image: ImageEncoder, cache_dir: str | None = None,
                 threads: int = 1) -> None:
        self.text = text
        self.image = image
        self._pool = ThreadPoolExecutor(max(threads, 1), thread_name_prefix="photos")
        self.text_cache = EmbeddingCache(cache_dir, text.encoder_id, text.dim) if cache_dir else None
        self.image_cache = EmbeddingCache(cache_dir, image.encoder_id, image.dim) if cache_dir else None

    def _text_vectors(self, texts: list[str]) -> tuple[list[np.ndarray | Exception], list[bool]]:
        """Cached vectors where present, the encoder's for the rest (then cached); per text a hit flag."""
        keys = [content_hash(text) for text in texts]
        vectors: list = [self.text_cache.get(key) if self.text_cache else None for key in keys]
        hits = [vector is not None for vector in vectors]
        misses = [i for i, vector in enumerate(vectors) if vector is None]
        outcomes = _encode_unique(self.text.encode, [keys[i] for i in misses], [texts[i] for i in misses],
                                  self.text_cache)
        for i, outcome in zip(misses, outcomes, strict=True):
            vectors[i] = outcome
        return vectors, hits

    def _first_image(self, uris: Sequence[str], read: Callable[[str], bytes]) -> _Photo:
        """The first photo that is cached or decodes; else no photo and the first failure's status."""
        status = STATUS_NO_IMAGE
        for uri in list(uris)[:MAX_IMAGES_TRIED]:
            try:
                data = read(uri)
                key = content_hash(data)
                cached = self.image_cache.get(key) if self.image_cache else None
                if cached is not None:
                    return _Photo(STATUS_OK, key, vector=cached, cached=True)
                return _Photo(STATUS_OK, key, pixels=load_pixels(data))
            except FileNotFoundError:
                failure = STATUS_MISSING
            except ImageError as error:
                failure = error.status
            status = failure if status == STATUS_NO_IMAGE else status
        return _Photo(status)

    def embed(self, records: Sequence[Mapping[str, Any]], read: Callable[[str], bytes]) -> list[Embedded]:
        """Embed a batch of product records (products schema).

        Args:
            records: product records; texts come from `features.embedded_texts`, photos from
                `image_uris`.
            read: returns a URI's bytes; raises FileNotFoundError when it does not exist and ImageError
                when it can never be read (other errors propagate: a transient storage error must fail
                the bundle so the runner retries it).
        Returns:
            One `Embedded` per record, in order: the record plus `text_embedding` and
            `title_embedding` (float32[384], L2-normalised), `image_embedding` (float32[1280], zeros
            without a usable photo), `image_present` (0.0/1.0) and `image_status`; or an error for the
            dead-letter output.
        """
        # Both texts of every record in one encoder call (a title often equals another product's).
        full, titles = zip(*map(features.embedded_texts, records), strict=True) if records else ((), ())
        vectors, text_hits = self._text_vectors([*full, *titles])
        text_vectors, title_vectors = vectors[:len(records)], vectors[len(records):]
        photos = list(self._pool.map(lambda record: self._first_image(record.get("image_uris") or [], read),
                                     records))
        to_encode = [photo for photo in photos if photo.pixels is not None]
        outcomes = _encode_unique(self.image.encode, [photo.key for photo in to_encode],
                                  [photo.pixels for photo in to_encode], self.image_cache)
        for photo, outcome in zip(to_encode, outcomes, strict=True):
            photo.vector, photo.pixels = outcome, None
        results = []
        for i, record in enumerate(records):
            photo = photos[i]
            failure = next((v for v in (text_vectors[i], title_vectors[i], photo.vector)
                            if isinstance(v, Exception)), None)
            if failure is not None:
                results.append(Embedded(None, f"{type(failure).__name__}: {failure}", photo.status))
                continue
            present = photo.vector is not None
            embedded = dict(record)
            embedded[features.TEXT_EMBEDDING] = np.asarray(text_vectors[i], np.float32)
            embedded[features.TITLE_EMBEDDING] = np.asarray(title_vectors[i], np.float32)
            embedded[features.IMAGE_EMBEDDING] = (np.asarray(photo.vector, np.float32) if present
                                                  else np.zeros(features.IMAGE_DIM, np.float32))
            embedded[features.IMAGE_PRESENT] = 1.0 if present else 0.0
            embedded[IMAGE_STATUS] = photo.status
            text_hit = text_hits[i] and text_hits[len(records) + i]
            hits = [name for name, hit in (("text", text_hit), ("image", photo.cached)) if hit]
            results.append(Embedded(embedded, None, photo.status, hits))
        return results
