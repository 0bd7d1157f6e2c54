"""One model prediction → one row of the categorized table (`schemas/categorized.json`).

Kept apart from the Beam code so scoring, evaluation and online callers build rows identically.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from linnet_core.decisions import LEAF, NAMES
from linnet_core.shopify import ShopifyMapping
from linnet_core.taxonomy import Taxonomy


@dataclass(frozen=True)
class Lineage:
    """What produced a row: recorded on every output row so any category can be traced back."""

    model_version: str
    taxonomy_version: str
    thresholds_version: str
    code_version: str
    run_id: str
    scored_at: dt.datetime


def abstain_reason(decision: int, depth: int, decoded_depth: int) -> str | None:
    """Why the decoded path was cut: the first level whose confidence fell below its threshold."""
    if decision == LEAF or depth >= decoded_depth:
        return None
    return f"below_threshold_level_{depth + 1}"


def categorized_row(record: Mapping[str, Any], level_ids: Sequence[int], level_confidences: Sequence[float],
                    gpt_id: int, decision: int, decoding: str, lineage: Lineage, taxonomy: Taxonomy,
                    shopify: ShopifyMapping | None = None) -> dict[str, Any]:
    """The categorized row of one product.

    Args:
        record: the product record (needs `product_id`, `store`, `updated_at`).
        level_ids: decoded node id per level 1..7 before thresholds, -1 past the path's end.
        level_confidences: confidence of each decoded node.
        gpt_id: the prediction after thresholds and back-off, -1 when abstained.
        decision: 0 abstained, 1 backed off to an ancestor, 2 the whole decoded path kept.
    """
    predicted = taxonomy.node(gpt_id) if gpt_id >= 0 else None
    depth = predicted.depth if predicted else 0
    decoded_depth = sum(1 for node_id in level_ids if node_id >= 0)
    return {
        "product_id": record["product_id"],
        "store": record.get("store"),
        "gpt_id": predicted.id if predicted else None,
        "gpt_path": predicted.full_path if predicted else None,
        "depth": depth,
        "level_ids": [int(node_id) for node_id in level_ids],
        "level_confidences": [round(float(c), 6) for c in level_confidences],
        "shopify_category_id": shopify.from_gpt(predicted.id) if predicted and shopify else None,
        "decision": NAMES[decision],
        "abstain_reason": abstain_reason(decision, depth, decoded_depth),
        "decoding": decoding,
        "model_version": lineage.model_version,
        "taxonomy_version": lineage.taxonomy_version,
        "thresholds_version": lineage.thresholds_version,
        "code_version": lineage.code_version,
        "run_id": lineage.run_id,
        "scored_at": lineage.scored_at,
        "updated_at": record.get("updated_at"),
    }


def prediction_row(record: Mapping[str, Any], outputs: Mapping[str, Any], lineage: Lineage,
                   taxonomy: Taxonomy, shopify: ShopifyMapping | None = None) -> dict[str, Any]:
    """The categorized row of one product from the model's outputs for it (one index of
    `Predictor.predict`'s arrays): what the batch table and the online service both return."""
    decoding = outputs["decoding"]
    return categorized_row(
        record, np.asarray(outputs["level_ids"]).tolist(), np.asarray(outputs["level_confidences"]).tolist(),
        int(outputs["gpt_id"]), int(outputs["decision"]),
        decoding.decode() if isinstance(decoding, bytes) else str(decoding), lineage, taxonomy, shopify)
