"""Table and record schemas as data files; `load` reads one by name so no schema is written twice."""

from __future__ import annotations

import json
from importlib import resources


def load(name: str) -> list | dict:
    """The parsed JSON schema `<name>.json` shipped in this package (e.g. "products")."""
    return json.loads(resources.files(__name__).joinpath(f"{name}.json").read_text(encoding="utf-8"))
