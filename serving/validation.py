"""A `POST /v1/categorize` body → validated products, or a `RequestError` naming the field to fix.

Each product is normalized by the same rule the batch readers apply (`linnet_core.records.normalize`,
labels optional as in `linnet score`), so an accepted product is the record the nightly table scores.
Online, a caller is waiting and can fix its input, so what batch would route to a dead letter is an
answer here: 400 for a body that is no request, 422 for a product that cannot be scored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from linnet_core.records import LIST_FIELDS, MAX_CHARS, MAX_KEY_CHARS, MAX_LIST_ITEMS, RecordError, normalize

PRODUCTS = "products"
IMAGE_BASE64 = "image_base64"
INLINE_PREFIX = "inline://"
# What normalize reads of a field (it cuts longer input before parsing): more is a caller's mistake.
RAW_CHARS_READ = 4
MAX_IMAGE_BYTES = 10 * 2**20
MAX_IMAGES = 10


class RequestError(ValueError):
    """Input the service refuses: HTTP `status`, a machine-readable `code` and the field to blame."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.field = field

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": str(self), "field": self.field}}


@dataclass(frozen=True)
class Product:
    """A validated product: its record (products schema) and the photos sent inline, by the names its
    `image_uris` give them (`inline://<sha256 of the bytes>`, unique across the products batched
    together)."""

    record: dict[str, Any]
    inline_images: dict[str, bytes] = field(default_factory=dict)


def parse_products(body: Any, max_products: int, image_root: str | None) -> list[Product]:
    """The products of a request body `{"products": [ {...}, ... ]}`.

    Args:
        max_products: products per request at most.
        image_root: relative image paths resolve against it, and local paths must lie under it (a request
            must not make the service read arbitrary files); None allows remote URIs only.

    Raises:
        RequestError: 400 for a body of the wrong shape, 413 for too many products, 422 for a product
            that fails validation or repeats a product_id.
    """
    if not isinstance(body, Mapping) or not isinstance(body.get(PRODUCTS), list):
        raise RequestError(400, "bad_request", 'the body must be a JSON object {"products": [...]}', PRODUCTS)
    raw_products = body[PRODUCTS]
    if not raw_products:
        raise RequestError(400, "bad_request", "products is empty", PRODUCTS)
    if len(raw_products) > max_products:
        raise RequestError(413, "too_many_products", f"{len(raw_products)} products in one request; "
                           f"the limit is {max_products}", PRODUCTS)
    products, seen = [], set()
    for index, raw in enumerate(raw_products):
        where = f"{PRODUCTS}[{index}]"
        product = _product(raw, where, image_root)
        product_id = product.record["product_id"]
        if product_id in seen:
            raise RequestError(422, "duplicate_product_id", f"product_id {product_id!r} appears twice",
                               f"{where}.product_id")
        seen.add(product_id)
        products.append(product)
    return products


def _product(raw: Any, where: str, image_root: str | None) -> Product:
    if not isinstance(raw, Mapping):
        raise RequestError(422, "not_an_object", f"{where} is a {type(raw).__name__}, not an object", where)
    _check_sizes(raw, where)
    inline = _inline_images(raw.get(IMAGE_BASE64), f"{where}.{IMAGE_BASE64}")
    fields = {name: value for name, value in raw.items() if name != IMAGE_BASE64}
    if inline:  # inline photos count as content, as URIs normalize keeps as they are
        given = raw.get("image_uris") if raw.get("image_uris") is not None else raw.get("image_files")
        if given is not None and not isinstance(given, list):
            raise RequestError(422, "bad_field_type", f"{where}.image_uris must be a list beside "
                               f"{IMAGE_BASE64}", f"{where}.image_uris")
        fields["image_uris"] = [*(given or []), *inline]
    try:
        record = normalize(fields, image_root, optional_labels=True)
    except RecordError as error:
        blamed = f"{where}.{error.field}" if error.field else where
        raise RequestError(422, error.reason.value, f"{blamed}: {error}", blamed) from None
    for position, uri in enumerate(record["image_uris"]):
        if uri not in inline:
            _check_image_uri(uri, image_root, f"{where}.image_uris[{position}]")
    return Product(record, inline)


def _check_sizes(raw: Mapping[str, Any], where: str) -> None:
    for name, limit in {**MAX_CHARS, **MAX_KEY_CHARS}.items():
        value = raw.get(name)
        if isinstance(value, str) and len(value) > RAW_CHARS_READ * limit:
            raise RequestError(422, "oversized_field", f"{where}.{name} has {len(value)} characters; "
                               f"the limit is {RAW_CHARS_READ * limit}", f"{where}.{name}")
    for name in LIST_FIELDS:
        value = raw.get(name)
        if isinstance(value, list) and len(value) > RAW_CHARS_READ * MAX_LIST_ITEMS:
            raise RequestError(422, "oversized_field", f"{where}.{name} has {len(value)} items; "
                               f"the limit is {RAW_CHARS_READ * MAX_LIST_ITEMS}", f"{where}.{name}")


def _inline_images(value: Any, where: str) -> dict[str, bytes]:
    """Photos sent as base64 text, named by their content for the embedder's reader."""
    if value is None:
        return {}
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise RequestError(422, "bad_field_type", f"{where} must be a list of base64 strings", where)
    if len(value) > MAX_IMAGES:
        raise RequestError(422, "oversized_field", f"{where} has {len(value)} photos; "
                           f"the limit is {MAX_IMAGES}", where)
    images = {}
    for position, text in enumerate(value):
        item = f"{where}[{position}]"
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(422, "bad_image", f"{item} is not base64", item) from None
        if len(data) > MAX_IMAGE_BYTES:
            raise RequestError(422, "oversized_field", f"{item} has {len(data)} bytes; the limit is "
                               f"{MAX_IMAGE_BYTES}", item)
        images[f"{INLINE_PREFIX}{hashlib.sha256(data).hexdigest()}"] = data
    return images


def _check_image_uri(uri: str, image_root: str | None, where: str) -> None:
    if uri.startswith(INLINE_PREFIX):
        raise RequestError(422, "bad_image", f"{where}: {INLINE_PREFIX} names are reserved for "
                           f"{IMAGE_BASE64}", where)
    if "://" in uri:
        return
    root = Path(image_root).resolve() if image_root else None
    if root is None or not Path(uri).resolve().is_relative_to(root):
        raise RequestError(422, "bad_image", f"{where}: local image paths must lie under the service's "
                           f"--image_root ({image_root or 'none set'}); send the photo as {IMAGE_BASE64} or "
                           f"a gs:// URI", where)
