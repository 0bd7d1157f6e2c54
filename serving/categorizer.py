"""The stages of `linnet score` for the products of a few requests, in one process: embed → first pass →
store context → categorize → row. Every stage calls what the batch pipeline calls (the embedder, the
SavedModel's signatures, the store-context aggregate, the row builder), so a product gets the same row
online as in the nightly table.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable, Sequence, Sized
from itertools import accumulate
from typing import Any, TypeVar

import numpy as np

from linnet_core.categorization import Lineage, prediction_row
from linnet_core.encoders.image import STATUS_MISSING, STATUS_UNREADABLE
from linnet_core.store_context import StoreTable
from pipelines.embed import EmbedConfig, load_embedder, read_uri
from pipelines.score import base_lineage, load_taxonomies
from pipelines.store_context import SavedModelHandler, load_predictor, read_store_table
from serving.validation import IMAGE_BASE64, Product, RequestError

T = TypeVar("T")
LOGGER = logging.getLogger(__name__)
# Products whose photos were given but none could be used: online, the caller can send better ones.
UNUSABLE_IMAGES = (STATUS_MISSING, STATUS_UNREADABLE)


class OnlineCategorizer:
    """The model, the encoders and the store-context table, loaded once; `categorize` runs a batch.

    Args:
        model_dir: the model directory (local or gs://) `linnet score` would use.
        embed: the embedding settings (`EmbeddingOptions` flags, as in the batch pipelines).
        store_context: the store-context tables the nightly `linnet score --store_context DIR` keeps;
            None: a request's products give each other context, as one batch run over them would.
        run_id: the `run_id` of this service's rows.
    """

    def __init__(self, model_dir: str, embed: EmbedConfig, store_context: str | None, run_id: str,
                 max_batch_size: int = 256) -> None:
        self.embedder = load_embedder(embed)
        self.predictor = load_predictor(model_dir, max_batch_size)
        self.taxonomy, self.shopify = load_taxonomies(model_dir)
        self.lineage = base_lineage(self.predictor.info, run_id)
        self.store_context = store_context
        self.table = (read_store_table(store_context, self.predictor.store_context_width) if store_context
                      else StoreTable())

    def describe(self) -> dict[str, Any]:
        """What `GET /v1/model` shows: versions, thresholds, taxonomy, encoders and the context table."""
        metadata = self.predictor.metadata
        return {
            **{key: metadata[key] for key in ("model_version", "thresholds_version", "taxonomy_version",
                                              "taxonomy_fingerprint", "default_decoding")},
            "thresholds": [float(x) for x in np.asarray(metadata["thresholds"]).ravel()],
            "evidence": list(self.predictor.evidence),
            "taxonomy": {"categories": len(self.taxonomy), "levels": self.taxonomy.max_depth},
            "encoders": {"text": self.embedder.text.encoder_id, "image": self.embedder.image.encoder_id},
            "store_context": {"directory": self.store_context, "version": self.table.version,
                              "stores": len(self.table.counts), "members": len(self.table.members)},
            "code_version": self.lineage["code_version"],
            "run_id": self.lineage["run_id"],
        }

    def categorize(self, requests: Sequence[Sequence[Product]]) -> list[list[dict] | RequestError]:
        """One batch over every product of `requests`; per request its rows (in order) or the error that
        refuses it (a product whose photos could not be used, or that the embedder failed on)."""
        products = [product for request in requests for product in request]
        outcomes = self.embedder.embed([product.record for product in products], _reader(products))
        answers: list[list[dict] | RequestError] = []
        kept: list[tuple[int, list[dict]]] = []  # (request index, embedded records)
        for index, mine in enumerate(split_like(outcomes, requests)):
            refusals = (_refusal(position, outcome) for position, outcome in enumerate(mine))
            error = next((refusal for refusal in refusals if refusal is not None), None)
            answers.append(error)
            if error is None:
                kept.append((index, [outcome.record for outcome in mine]))
        if kept:
            for (index, _), rows in zip(kept, self._rows([records for _, records in kept]), strict=True):
                answers[index] = rows
        return answers

    def _rows(self, requests: list[list[dict]]) -> list[list[dict]]:
        records = [record for request in requests for record in request]
        inputs = SavedModelHandler.inputs(records)
        own = self._contributions(requests, inputs)
        # Each request is its own batch run: no context leaks between callers.
        contexts = [self.table.contexts([r["product_id"] for r in request], [r.get("store") for r in request],
                                        mine) for request, mine in zip(requests, split_like(own, requests),
                                                                        strict=True)]
        outputs = self.predictor.predict(inputs, store_context=np.concatenate(contexts))
        lineage = Lineage(model_version=self.predictor.model_version, scored_at=dt.datetime.now(dt.UTC),
                          **self.lineage)
        rows = [prediction_row(record, {name: value[i] for name, value in outputs.items()}, lineage,
                               self.taxonomy, self.shopify) for i, record in enumerate(records)]
        return split_like(rows, requests)

    def _contributions(self, requests: list[list[dict]], inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Each product's first-pass contribution where it matters: a product's own contribution cancels
        out of its own context (leave-one-out), so only products that share a store with another product
        of their request need the first pass; a single product, the usual request, is spared a whole
        model call. Zeros elsewhere."""
        needed = [i for i, shared in enumerate(shares_a_store(requests)) if shared]
        own = np.zeros((len(inputs[next(iter(inputs))]), self.predictor.store_context_width), np.float32)
        if needed:
            own[needed] = self.predictor.store_evidence({name: v[needed] for name, v in inputs.items()})
        return own


def split_like(items: Sequence[T], requests: Sequence[Sized]) -> list[Sequence[T]]:
    """`items` of the concatenated requests, cut back into one slice per request."""
    ends = accumulate(len(request) for request in requests)
    return [items[end - len(request):end] for request, end in zip(requests, ends, strict=True)]


def shares_a_store(requests: Sequence[Sequence[dict]]) -> list[bool]:
    """Per product of the concatenated requests: whether another product of its request has its store."""
    shared = []
    for request in requests:
        counts = Counter(record.get("store") for record in request)
        shared += [bool(record.get("store")) and counts[record.get("store")] > 1 for record in request]
    return shared


def _reader(products: Sequence[Product]) -> Callable[[str], bytes]:
    """Photos sent inline by name, the rest through Beam's FileSystems (local under --image_root, gs://)."""
    inline = {uri: data for product in products for uri, data in product.inline_images.items()}

    def read(uri: str) -> bytes:
        return inline[uri] if uri in inline else read_uri(uri)

    return read


def _refusal(position: int, outcome: Any) -> RequestError | None:
    where = f"products[{position}]"
    if outcome.error is not None:
        return RequestError(422, "embedding_failed", f"{where}: {outcome.error}", where)
    if outcome.image_status in UNUSABLE_IMAGES:
        return RequestError(422, f"image_{outcome.image_status}", f"{where}: none of its photos could be "
                            f"used ({outcome.image_status}); send readable ones in image_uris or "
                            f"{IMAGE_BASE64}, or none", f"{where}.image_uris")
    return None
