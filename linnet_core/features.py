"""Feature names and the two functions that turn a product record into encoder texts.

Training and scoring both call `product_text` and `title_text`, so what the text encoder sees never
differs between them. Feature names here are the keys of `schemas/training_features.json`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TEXT_EMBEDDING = "text_embedding"
TITLE_EMBEDDING = "title_embedding"
IMAGE_EMBEDDING = "image_embedding"
IMAGE_PRESENT = "image_present"
TEXT_DIM = 384
IMAGE_DIM = 1280
# The model's inputs, in signature order, with their shapes per product.
MODEL_INPUTS = (TEXT_EMBEDDING, TITLE_EMBEDDING, IMAGE_EMBEDDING, IMAGE_PRESENT)
INPUT_SHAPES = {TEXT_EMBEDDING: (TEXT_DIM,), TITLE_EMBEDDING: (TEXT_DIM,), IMAGE_EMBEDDING: (IMAGE_DIM,),
                IMAGE_PRESENT: ()}
LEVELS = 7
NO_LABEL = -1
DESCRIPTION_CHARS = 600
LIST_ITEMS = 10


def label_feature(level: int) -> str:
    """Name of the level-`level` label feature (1-based)."""
    return f"label_level_{level}"


def weight_feature(level: int) -> str:
    """Name of the level-`level` class-weight feature written by tf.Transform (1-based)."""
    return f"weight_level_{level}"


def product_text(record: Mapping[str, Any], description_chars: int = DESCRIPTION_CHARS) -> str:
    """The text a product is embedded from.

    Order and separators: `title | type: product_type | vendor: vendor | collections: a, b |
    tags: a, b | description`, empty parts left out. The most category-bearing fields come first so
    that token truncation (`encoders.text.DEFAULT_MAX_TOKENS`) cuts the description, never the title. The
    description is cut to `description_chars` characters at a word boundary; lists keep their first
    `LIST_ITEMS` items. Options are left out: variant values (sizes, colours) say little of category.
    """
    parts: list[str] = []
    if record.get("title"):
        parts.append(str(record["title"]))
    for label, name in (("type", "product_type"), ("vendor", "vendor")):
        if record.get(name):
            parts.append(f"{label}: {record[name]}")
    for name in ("collections", "tags"):
        items = [str(item) for item in (record.get(name) or [])[:LIST_ITEMS] if item]
        if items:
            parts.append(f"{name}: {', '.join(items)}")
    description = str(record.get("description") or "")
    if len(description) > description_chars:
        cut = description[:description_chars]
        description = cut[: cut.rfind(" ")] if " " in cut else cut
    if description:
        parts.append(description)
    return " | ".join(parts)


def embedded_texts(record: Mapping[str, Any]) -> tuple[str, str]:
    """The two texts a product is embedded from: (`product_text`, `title_text`)."""
    return product_text(record), title_text(record)


def title_text(record: Mapping[str, Any]) -> str:
    """The short text of what the product is: `title | type: product_type` (either part may be empty).

    Embedded beside `product_text`: vendor, tags, collections and description are written in each
    store's own way, so a second vector of the title and type alone is what carries across stores
    (docs/experiments/2026-11-29-title-exemplars-cross-fitting.md).
    """
    parts = [str(record["title"])] if record.get("title") else []
    if record.get("product_type"):
        parts.append(f"type: {record['product_type']}")
    return " | ".join(parts)
