"""Embedding of product records: two texts always, the first usable photo when there is one, with the cache.

The pipeline hands in a batch of records and a function that reads image bytes (Beam's FileSystems there,
plain files in tests), and, when it joined the embedding table, the vectors the table already holds for
each record (`Stored`); this module decides every outcome, so batch and online paths cannot drift apart.
A vector comes from the table, else the local cache, else the encoder (`TABLE`, `CACHE`, `ENCODER`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

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
# Where a vector came from, cheapest first: a kind's source is the costliest of its vectors'.
TABLE, CACHE, ENCODER = "table", "cache", "encoder"
_COST = {TABLE: 0, CACHE: 1, ENCODER: 2}


@dataclass(frozen=True)
class ContentKeys:
    """The content hashes a record's vectors are stored under: its two texts (`embedded_texts` order) and
    its first readable photo, with that photo's URI so a stored vector spares reading it again."""

    texts: tuple[str, str]
    photo_uri: str | None = None
    photo: str | None = None

    def hashes(self) -> list[str]:
        return [*self.texts, *([self.photo] if self.photo else [])]


def content_keys(record: Mapping[str, Any], read: Callable[[str], bytes]) -> ContentKeys:
    """The keys of `record`'s content. A photo is keyed by the hash of its bytes, so the first photo that
    reads is read here; one that is missing or unreadable is skipped, as `embed` skips it.

    Raises what `read` raises besides FileNotFoundError and ImageError (a transient storage error).
    """
    texts = tuple(content_hash(text) for text in features.embedded_texts(record))
    for uri in list(record.get("image_uris") or [])[:MAX_IMAGES_TRIED]:
        try:
            return ContentKeys(texts, uri, content_hash(read(uri)))
        except (FileNotFoundError, ImageError):
            continue
    return ContentKeys(texts)


@dataclass(frozen=True)
class Stored:
    """What the embedding table holds for one record: its keys and, per content hash found, the vectors
    by encoder id (a table may hold vectors of several encoders; only the loaded ones' count)."""

    keys: ContentKeys
    vectors: Mapping[str, Mapping[str, np.ndarray]] = field(default_factory=dict)

    def get(self, key: str | None, encoder_id: str) -> np.ndarray | None:
        return self.vectors.get(key, {}).get(encoder_id) if key else None


@dataclass
class Embedded:
    """The outcome for one record: the embedded record, or the error that sends it to dead letters."""

    record: dict[str, Any] | None
    error: str | None = None
    image_status: str = STATUS_NO_IMAGE
    cache_hits: list[str] = field(default_factory=list)
    table_hits: list[str] = field(default_factory=list)
    encoded: bool = False
    # (encoder id, content hash, vector) of the vectors not from the table: what a run appends to it.
    new_vectors: list[tuple[str, str, np.ndarray]] = field(default_factory=list)


class _Text(NamedTuple):
    """One of a record's two texts on its way out: key, vector (or the error) and where it came from."""

    key: str
    vector: np.ndarray | Exception
    source: str


@dataclass
class _Photo:
    """A product's chosen photo on its way through the cache and the image encoder."""

    status: str
    key: str | None = None
    pixels: np.ndarray | None = None
    vector: np.ndarray | Exception | None = None
    source: str = ENCODER


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

    def _text_vectors(self, texts: list[str], stored: list[np.ndarray | None]
                      ) -> tuple[list[str], list[np.ndarray | Exception], list[str]]:
        """Per text its key, its vector (stored, else cached, else the encoder's, then cached) and
        where the vector came from."""
        keys = [content_hash(text) for text in texts]
        vectors: list = [vector if vector is not None else self.text_cache.get(key) if self.text_cache
                         else None for key, vector in zip(keys, stored, strict=True)]
        sources = [TABLE if known is not None else CACHE if vector is not None else ENCODER
                   for known, vector in zip(stored, vectors, strict=True)]
        misses = [i for i, vector in enumerate(vectors) if vector is None]
        outcomes = _encode_unique(self.text.encode, [keys[i] for i in misses], [texts[i] for i in misses],
                                  self.text_cache)
        for i, outcome in zip(misses, outcomes, strict=True):
            vectors[i] = outcome
        return keys, vectors, sources

    def _first_image(self, uris: Sequence[str], read: Callable[[str], bytes], stored: Stored | None
                     ) -> _Photo:
        """The stored photo (not read again), else the first photo that is cached or decodes; else no
        photo and the first failure's status."""
        status = STATUS_NO_IMAGE
        for uri in list(uris)[:MAX_IMAGES_TRIED]:
            if stored and uri == stored.keys.photo_uri:
                known = stored.get(stored.keys.photo, self.image.encoder_id)
                if known is not None:
                    return _Photo(STATUS_OK, stored.keys.photo, vector=known, source=TABLE)
            try:
                data = read(uri)
                key = content_hash(data)
                cached = self.image_cache.get(key) if self.image_cache else None
                if cached is not None:
                    return _Photo(STATUS_OK, key, vector=cached, source=CACHE)
                return _Photo(STATUS_OK, key, pixels=load_pixels(data))
            except FileNotFoundError:
                failure = STATUS_MISSING
            except ImageError as error:
                failure = error.status
            status = failure if status == STATUS_NO_IMAGE else status
        return _Photo(status)

    def embed(self, records: Sequence[Mapping[str, Any]], read: Callable[[str], bytes],
              stored: Sequence[Stored | None] | None = None) -> list[Embedded]:
        """Embed a batch of product records (products schema).

        Args:
            records: product records; texts come from `features.embedded_texts`, photos from
                `image_uris`.
            read: returns a URI's bytes; raises FileNotFoundError when it does not exist and ImageError
                when it can never be read (other errors propagate: a transient storage error must fail
                the bundle so the runner retries it).
            stored: per record, what the embedding table holds for it (None: no table; then no
                `new_vectors` are collected).
        Returns:
            One `Embedded` per record, in order: the record plus `text_embedding` and
            `title_embedding` (float32[384], L2-normalised), `image_embedding` (float32[1280], zeros
            without a usable photo), `image_present` (0.0/1.0) and `image_status`; or an error for the
            dead-letter output.
        """
        table = stored is not None
        stored = list(stored) if table else [None] * len(records)
        # Photos are read and decoded on the pool while the texts encode: neither waits for the other.
        reading = self._pool.map(
            lambda pair: self._first_image(pair[0].get("image_uris") or [], read, pair[1]),
            zip(records, stored, strict=True))
        # Both texts of every record in one encoder call (a title often equals another product's).
        full, titles = zip(*map(features.embedded_texts, records), strict=True) if records else ((), ())
        known = [[s.get(s.keys.texts[part], self.text.encoder_id) if s else None for s in stored]
                 for part in (0, 1)]
        keys, vectors, sources = self._text_vectors([*full, *titles], [*known[0], *known[1]])
        photos = list(reading)
        to_encode = [photo for photo in photos if photo.pixels is not None]
        outcomes = _encode_unique(self.image.encode, [photo.key for photo in to_encode],
                                  [photo.pixels for photo in to_encode], self.image_cache)
        for photo, outcome in zip(to_encode, outcomes, strict=True):
            photo.vector, photo.pixels = outcome, None
        n = len(records)
        return [self._outcome(record, [_Text(keys[j], vectors[j], sources[j]) for j in (i, n + i)],
                              photos[i], table) for i, record in enumerate(records)]

    def _outcome(self, record: Mapping[str, Any], texts: list[_Text], photo: _Photo, table: bool) -> Embedded:
        """One record's `Embedded`: its vectors, where they came from, and what the table lacks."""
        full, title = texts
        failure = next((v for v in (full.vector, title.vector, photo.vector) if isinstance(v, Exception)),
                       None)
        if failure is not None:
            return Embedded(None, f"{type(failure).__name__}: {failure}", photo.status)
        present = photo.vector is not None
        embedded = dict(record)
        embedded[features.TEXT_EMBEDDING] = np.asarray(full.vector, np.float32)
        embedded[features.TITLE_EMBEDDING] = np.asarray(title.vector, np.float32)
        embedded[features.IMAGE_EMBEDDING] = (np.asarray(photo.vector, np.float32) if present
                                              else np.zeros(features.IMAGE_DIM, np.float32))
        embedded[features.IMAGE_PRESENT] = 1.0 if present else 0.0
        embedded[IMAGE_STATUS] = photo.status
        kinds = {"text": max((text.source for text in texts), key=_COST.get)}
        if present:
            kinds["image"] = photo.source
        new: list[tuple[str, str, np.ndarray]] = []
        if table:
            new = [(self.text.encoder_id, text.key, np.asarray(text.vector, np.float32))
                   for text in texts if text.source != TABLE]
            if present and photo.source != TABLE:
                new.append((self.image.encoder_id, photo.key, embedded[features.IMAGE_EMBEDDING]))
        return Embedded(embedded, None, photo.status,
                        cache_hits=[kind for kind, source in kinds.items() if source == CACHE],
                        table_hits=[kind for kind, source in kinds.items() if source == TABLE],
                        encoded=ENCODER in kinds.values(), new_vectors=new)
