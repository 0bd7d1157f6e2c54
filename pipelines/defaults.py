"""Default locations: the shared data beside the project and the local model/embedding cache.

Every default can be overridden by a flag; environment variables move the roots for whole runs.
"""

from __future__ import annotations

import os
from pathlib import Path

from linnet_core.taxonomy import TaxonomyError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("LINNET_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))
TAXONOMY = str(SHARED_DATA / "taxonomy" / "google" / "taxonomy-with-ids.en-US.txt")
SHOPIFY_TAXONOMY = str(SHARED_DATA / "taxonomy" / "shopify-2025-08")
PRODUCTS_JSONL = str(SHARED_DATA / "products" / "train.jsonl")
CACHE = Path(os.environ.get("LINNET_CACHE", Path.home() / ".cache" / "linnet"))
MODELS = CACHE / "models"
OUTPUT = PROJECT_ROOT / "out"


def locale_file(taxonomy_file: str, locale: str) -> Path:
    """The `taxonomy-with-ids.<locale>.txt` beside the taxonomy file or in a `locales-*` folder."""
    folder = Path(taxonomy_file).parent
    candidates = [folder / f"taxonomy-with-ids.{locale}.txt"]
    candidates += sorted(folder.glob(f"locales-*/taxonomy-with-ids.{locale}.txt"), reverse=True)
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise TaxonomyError(f"no taxonomy file for locale {locale!r} near {folder}")
