"""Categorized rows from predictions: decisions, abstain reasons, Shopify ids and lineage."""

from __future__ import annotations

import datetime as dt

import pytest

from linnet_core.categorization import Lineage, categorized_row
from linnet_core.decisions import ABSTAINED, BACKED_OFF, LEAF
from linnet_core.taxonomy import Taxonomy

LINEAGE = Lineage("m1", "tiny-1", "t1", "0.1.0", "run-1", dt.datetime(2026, 11, 25, tzinfo=dt.UTC))
RECORD = {"product_id": "p1", "store": "s", "updated_at": None}


@pytest.mark.parametrize(("gpt_id", "decision", "depth", "gpt_path", "reason"), [
    (3, LEAF, 3, "Animals > Pets > Dogs", None),
    (2, BACKED_OFF, 2, "Animals > Pets", "below_threshold_level_3"),
    (-1, ABSTAINED, 0, None, "below_threshold_level_1"),
])
def test_rows(tiny: Taxonomy, gpt_id: int, decision: int, depth: int, gpt_path: str | None,
              reason: str | None) -> None:
    row = categorized_row(RECORD, [1, 2, 3, -1, -1, -1, -1], [0.9, 0.8, 0.4, 0, 0, 0, 0], gpt_id, decision,
                          "exact", LINEAGE, tiny)
    assert (row["gpt_id"], row["depth"], row["gpt_path"], row["abstain_reason"]) == (
        None if gpt_id < 0 else gpt_id, depth, gpt_path, reason)
    assert row["decision"] == ("abstained", "backed_off", "leaf")[decision]
    assert row["level_ids"] == [1, 2, 3, -1, -1, -1, -1]
    assert (row["model_version"], row["run_id"], row["decoding"]) == ("m1", "run-1", "exact")
