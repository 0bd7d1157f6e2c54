"""Shared fixtures: the real taxonomy from ../shared and a tiny hand-made one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from linnet_core.taxonomy import Taxonomy
from pipelines import cli, defaults

SMALL_CONFIG = {"shared_units": [32], "level_units": [16], "epochs": 1, "batch_size": 64}

TINY_TAXONOMY = """# Google_Product_Taxonomy_Version: tiny-1
1 - Animals
2 - Animals > Pets
3 - Animals > Pets > Dogs
4 - Animals > Pets > Cats
5 - Animals > Farm
10 - Toys
11 - Toys > Dolls
12 - Toys > Puzzles
13 - Toys > Puzzles > Jigsaw
"""


@pytest.fixture(scope="session")
def gpt() -> Taxonomy:
    """The real Google Product Taxonomy 2021-09-21."""
    return Taxonomy.load(defaults.TAXONOMY)


@pytest.fixture
def tiny_taxonomy_file(tmp_path: Path) -> Path:
    path = tmp_path / "taxonomy-with-ids.en-US.txt"
    path.write_text(TINY_TAXONOMY, encoding="utf-8")
    return path


@pytest.fixture
def tiny(tiny_taxonomy_file: Path) -> Taxonomy:
    """Two roots, depth 3: small enough to compute decodings and metrics by hand."""
    return Taxonomy.load(tiny_taxonomy_file)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory, gpt: Taxonomy) -> Path:
    """A small model trained on synthetic training data, for the scoring tests (trained once)."""
    from synthetic_training_data import write_training_data  # TensorFlow: only where a model is needed

    root = tmp_path_factory.mktemp("score_model")
    write_training_data(root / "data", gpt, sizes={"train": 200, "validation": 50})
    (root / "config.json").write_text(json.dumps(SMALL_CONFIG))
    assert cli.main(["train", "--data", str(root / "data"), "--config", str(root / "config.json"),
                     "--output", str(root / "model")]) == 0
    return root / "model"
