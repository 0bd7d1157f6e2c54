"""Shopify's Standard Product Taxonomy and its published mapping onto Google Product Taxonomy ids.

Scored rows carry a Shopify category where the mapping has one, and labelled Shopify products can be
turned into GPT labels; both need a lookup from a Shopify id or path to a GPT node and back.
"""

from __future__ import annotations

import re
from pathlib import Path

from linnet_core.taxonomy import PATH_SEPARATOR, Node, Taxonomy, TaxonomyError

_GID_PREFIX = "gid://shopify/TaxonomyCategory/"
_CATEGORY_LINE = re.compile(r"^(gid://shopify/TaxonomyCategory/)?([a-z]{2}(?:-\d+)*)\s*:\s*(\S.*)$")
_RULE_KEY = re.compile(r"^\s*(?:-\s+)?(\w+):\s*(.*)$")
_LIST_ITEM = re.compile(r"^\s*-\s+'?([^']*)'?\s*$")


def short_id(shopify_id: str) -> str:
    """`gid://shopify/TaxonomyCategory/aa-1` → `aa-1`; short ids pass through."""
    return shopify_id.strip().removeprefix(_GID_PREFIX)


def parse_categories(path: str | Path) -> dict[str, str]:
    """Read `categories.<locale>.txt` into {short id: full path}. Raises TaxonomyError on bad lines."""
    categories: dict[str, str] = {}
    with open(path, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            match = _CATEGORY_LINE.match(line)
            if not match:
                raise TaxonomyError(f"{path}:{number}: cannot parse Shopify category line {line!r}")
            if match.group(2) in categories:
                raise TaxonomyError(f"{path}:{number}: duplicate Shopify id {match.group(2)}")
            categories[match.group(2)] = match.group(3).strip()
    return categories


def parse_mapping(path: str | Path) -> tuple[dict[str, str], dict[str, int], set[str]]:
    """Read `shopify_to_google_*.yml` into (header fields, {short Shopify id: GPT id}, unmapped ids).

    The file is a flat list of rules with one input id and a list of output ids (LinNét takes the
    first), then a list of ids with no GPT counterpart. A small line parser keeps the core free of a
    YAML dependency.
    """
    header: dict[str, str] = {}
    mapping: dict[str, int] = {}
    unmapped: set[str] = set()
    section = current = None
    with open(path, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip("\n")
            if not line.strip() or line.strip() == "---":
                continue
            key = _RULE_KEY.match(line)
            item = _LIST_ITEM.match(line)
            if not line.startswith((" ", "-")) and key:
                section = key.group(1)
                if key.group(2):
                    header[section] = key.group(2)
            elif section == "unmapped_product_category_ids" and item:
                unmapped.add(short_id(item.group(1)))
            elif section == "rules" and key and key.group(1) == "product_category_id" and key.group(2):
                current = short_id(key.group(2).strip("'\""))
            elif section == "rules" and item and line.startswith("    -") and current is not None:
                mapping.setdefault(current, int(item.group(1)))
            elif not (section == "rules" and key):
                raise TaxonomyError(f"{path}:{number}: cannot parse mapping line {line!r}")
    return header, mapping, unmapped


def mapping_files(directory: str | Path, locale: str = "en") -> tuple[str, str]:
    """The files `ShopifyMapping.load` reads, relative to `directory`: the newest GPT mapping and the
    locale's category names (what a model directory keeps of a Shopify taxonomy folder).

    Raises:
        TaxonomyError: the folder has no mapping file.
    """
    found = sorted(Path(directory).glob("shopify_to_google_*.yml"))
    if not found:
        raise TaxonomyError(f"no shopify_to_google_*.yml in {directory}")
    return found[-1].name, f"categories/categories.{locale}.txt"


class ShopifyMapping:
    """Shopify categories with their GPT mapping, checked against a GPT `Taxonomy`.

    Raises:
        TaxonomyError: when a rule maps to a GPT id the taxonomy lacks, or names an unknown Shopify id.
    """

    def __init__(self, categories: dict[str, str], mapping: dict[str, int], gpt: Taxonomy,
                 version: str = "unknown") -> None:
        for shopify_id, gpt_id in mapping.items():
            if shopify_id not in categories:
                raise TaxonomyError(f"mapping names unknown Shopify category {shopify_id}")
            if gpt_id not in gpt:
                raise TaxonomyError(f"Shopify {shopify_id} maps to GPT id {gpt_id}, "
                                    f"not in taxonomy {gpt.version}")
        self.version = version
        self.gpt = gpt
        self._categories = categories
        self._by_path = {path.casefold(): sid for sid, path in categories.items()}
        self._to_gpt = mapping
        self._from_gpt: dict[int, str] = {}
        for shopify_id in sorted(mapping, key=lambda sid: (sid.count("-"), sid)):
            self._from_gpt.setdefault(mapping[shopify_id], shopify_id)

    @classmethod
    def load(cls, directory: str | Path, gpt: Taxonomy, locale: str = "en") -> ShopifyMapping:
        """Load `<directory>/categories/categories.<locale>.txt` and the GPT mapping file beside it."""
        directory = Path(directory)
        mapping_file, categories_file = (directory / name for name in mapping_files(directory, locale))
        header, mapping, _ = parse_mapping(mapping_file)
        categories = parse_categories(categories_file)
        return cls(categories, mapping, gpt, version=header.get("input_taxonomy", "unknown"))

    def __len__(self) -> int:
        return len(self._to_gpt)

    def path(self, shopify_id: str) -> str:
        try:
            return self._categories[short_id(shopify_id)]
        except KeyError:
            raise TaxonomyError(f"unknown Shopify category {shopify_id!r}") from None

    def to_gpt(self, shopify_id_or_path: str) -> Node:
        """The GPT node a Shopify category (short id, gid or full path) maps to."""
        key = short_id(shopify_id_or_path)
        if key not in self._categories:
            normalized = PATH_SEPARATOR.join(p.strip() for p in shopify_id_or_path.split(">")).casefold()
            key = self._by_path.get(normalized, key)
        if key not in self._categories:
            raise TaxonomyError(f"unknown Shopify category {shopify_id_or_path!r}")
        if key not in self._to_gpt:
            raise TaxonomyError(f"Shopify category {key} has no GPT mapping")
        return self.gpt.node(self._to_gpt[key])

    def from_gpt(self, gpt_id: int) -> str | None:
        """The shallowest Shopify category that maps exactly onto this GPT node, if any."""
        return self._from_gpt.get(int(gpt_id))
