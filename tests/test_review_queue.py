"""What to label next: level-1 margin and entropy, priority and the store- and branch-spread pick, on
hand-made candidates; `linnet review-queue` end to end on shared products with the session model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from linnet_core import review_queue
from pipelines import cli, defaults


def _candidates(stores, margins, branches, coverage):
    n = len(stores)
    return review_queue.Candidates(np.array([f"p{i}" for i in range(n)], dtype=object),
                                   np.array(stores, dtype=object), np.array(margins, float), np.zeros(n),
                                   np.array(branches), np.array(coverage))


def test_level1_uncertainty_is_margin_entropy_and_the_two_best():
    margin, entropy, top = review_queue.level1_uncertainty(np.array([[0.5, 0.5, 0.0], [0.1, 0.2, 0.7],
                                                                     [1 / 3, 1 / 3, 1 / 3]]))
    assert margin == pytest.approx([0.0, 0.5, 0.0])
    second = -(0.1 * math.log(0.1) + 0.2 * math.log(0.2) + 0.7 * math.log(0.7)) / math.log(3)
    assert entropy == pytest.approx([math.log(2) / math.log(3), second, 1.0])
    assert top.tolist() == [[0, 1], [2, 1], [0, 1]]
    with pytest.raises(ValueError, match="shape"):
        review_queue.level1_uncertainty(np.array([0.5, 0.5]))


def test_priority_prefers_uncertain_products_in_thin_branches():
    pool = _candidates(["a"] * 3, [0.1, 0.1, 0.9], [1, 2, 1], [0, 100, 0])
    assert review_queue.priority(pool) == pytest.approx([0.9, 0.9 / (1 + math.log(101)), 0.1])


def test_the_pick_spreads_over_stores_not_the_top_of_one():
    # Store a holds the six most uncertain products; b and c less uncertain ones.
    pool = _candidates(["a"] * 6 + ["b"] * 3 + ["c"] * 3, [0.0] * 6 + [0.3] * 3 + [0.5] * 3,
                       list(range(12)), [0] * 12)
    picked = review_queue.select(pool, 6)
    stores = [pool.store[i] for i in picked]
    assert sorted(stores) == ["a", "a", "b", "b", "c", "c"]  # 6 over 3 stores: at most 2 each
    assert picked[:2] == [0, 1]  # the most uncertain first, ties by product id
    assert review_queue.select(pool, 6, per_store_cap=6)[:6] == [0, 1, 2, 3, 4, 5]  # no spread without a cap


def test_the_cap_rises_when_stores_run_out_and_branches_spread():
    pool = _candidates(["a"] * 5 + ["b"], [0.0] * 6, [7, 7, 7, 8, 9, 7], [0] * 6)
    picked = review_queue.select(pool, 4)
    assert len(picked) == 4 and 5 in picked  # b's only product, then a's beyond the even share of 2
    # Within store a, branches 8 and 9 come before a second and third product of branch 7.
    assert [int(pool.branch[i]) for i in picked if pool.store[i] == "a"][:3] == [7, 8, 9]
    assert review_queue.select(pool, 4, per_store_cap=1) == [0, 5]  # a hard cap is kept
    assert sorted(review_queue.select(pool, 100)) == list(range(6))  # a budget beyond the pool: all
    with pytest.raises(ValueError, match=">= 1"):
        review_queue.select(pool, 0)


def test_reasons_name_the_margin_branch_coverage_and_store_pick():
    pool = _candidates(["a", "a"], [0.04, 0.2], [5, 6], [3, 40])
    lines = review_queue.reasons(pool, [0, 1], {5: "Toys > Dolls", 6: "Toys"}, [("Toys", "Animals")] * 2)
    assert lines[0].startswith("uncertain: level-1 margin 0.04 (Toys vs Animals)")
    assert "3 training labels under Toys > Dolls" in lines[0] and "store a's pick 1" in lines[0]
    assert "store a's pick 2" in lines[1]


@pytest.mark.slow
@pytest.mark.encoders
@pytest.mark.shared_data
def test_review_queue_end_to_end_on_shared_products(model_dir: Path, tmp_path: Path):
    products = tmp_path / "products.jsonl"
    by_store: dict[str, list[dict]] = {}
    with open(defaults.PRODUCTS_JSONL, encoding="utf-8") as handle:
        for record in map(json.loads, handle):
            if len(by_store) < 5 or record["store"] in by_store:
                by_store.setdefault(record["store"], []).append(record)
    records = [record for kept in by_store.values() for record in kept[:8]]  # 8 from each of 5 stores
    with open(products, "w", encoding="utf-8") as handle:
        for record in records:  # unlabelled: what a data team would queue
            unlabelled = {k: v for k, v in record.items() if not k.startswith(("gpt_", "shopify_"))}
            handle.write(json.dumps(unlabelled) + "\n")
        handle.write("not json\n")  # a dead letter, counted, not lost
    output = tmp_path / "queue"
    assert cli.main(["review-queue", "--model", str(model_dir), "--input", str(products), "--budget", "12",
                     "--output", str(output)]) == 0
    queue = pd.read_parquet(output / "review_queue.parquet")
    assert pd.read_csv(output / "review_queue.csv")["product_id"].astype(str).tolist() == queue[
        "product_id"].tolist()
    assert queue["rank"].tolist() == list(range(1, 13)) and queue["product_id"].is_unique
    stores = {r["product_id"]: r["store"] for r in records}
    assert set(queue["product_id"]) <= set(stores)
    assert (queue["store"] == queue["product_id"].map(stores)).all()
    counts = queue["store"].value_counts()
    assert counts.max() <= 3 and len(counts) >= 4  # 12 over 5 stores: at most 3 each, not one store's top
    assert queue["reason"].str.startswith("uncertain: level-1 margin").all()
    assert ((queue["margin"] >= 0) & (queue["margin"] <= 1)).all() and (queue["branch_coverage"] >= 0).all()
    dead = pd.read_parquet(output / "dead_letters")
    assert len(dead) == 1
