"""Shopify → GPT mapping on real categories."""

from __future__ import annotations

from pathlib import Path

import pytest

from linnet_core.shopify import ShopifyMapping, parse_mapping
from linnet_core.taxonomy import Taxonomy, TaxonomyError
from pipelines import defaults


@pytest.fixture(scope="module")
def shopify(gpt: Taxonomy) -> ShopifyMapping:
    return ShopifyMapping.load(defaults.SHOPIFY_TAXONOMY, gpt)


def test_mapping_size_and_unmapped(shopify: ShopifyMapping) -> None:
    assert len(shopify) == 10535
    _, _, unmapped = parse_mapping(next(Path(defaults.SHOPIFY_TAXONOMY).glob("*.yml")))
    assert {"bu", "se", "pa"} <= unmapped


@pytest.mark.parametrize(("key", "gpt_path"), [
    ("aa-1-1", "Apparel & Accessories > Clothing > Activewear"),
    ("gid://shopify/TaxonomyCategory/hb-3-10-13-3",
     "Health & Beauty > Personal Care > Hair Care > Shampoo & Conditioner > Shampoo"),
    ("Animals & Pet Supplies > Pet Supplies > Dog Supplies > Dog Food",
     "Animals & Pet Supplies > Pet Supplies > Dog Supplies > Dog Food"),
])
def test_to_gpt(shopify: ShopifyMapping, key: str, gpt_path: str) -> None:
    assert shopify.to_gpt(key).full_path == gpt_path


def test_path_and_id_agree(shopify: ShopifyMapping) -> None:
    assert shopify.to_gpt("ap-2-3-3") == shopify.to_gpt(shopify.path("ap-2-3-3"))


def test_from_gpt_prefers_shallowest(shopify: ShopifyMapping) -> None:
    assert shopify.from_gpt(5322) == "aa-1-1"
    assert shopify.from_gpt(1) == "ap"


def test_errors(shopify: ShopifyMapping) -> None:
    with pytest.raises(TaxonomyError, match="unknown Shopify category"):
        shopify.to_gpt("zz-9")
    with pytest.raises(TaxonomyError, match="no GPT mapping"):
        shopify.to_gpt("se-1")
