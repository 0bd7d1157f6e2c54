"""Shared fixtures: the real taxonomy from ../shared, a tiny hand-made one, and the costly things tests
share once per session (a trained model, the prepared encoders, the BigQuery emulator).

A test that takes a costly fixture, directly or through another fixture, is marked with what it costs
(`COST_MARKS`, pytest.ini), so `make test-fast` can leave it out.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bigquery_emulator import Emulator, running_emulator

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

# Fixture → the marker of what a test using it (directly or through other fixtures) costs.
COST_MARKS = {"train_model": "trains_model", "prepared_models": "encoders", "bq_emulator": "emulator",
              "gpt": "shared_data"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with the cost of the fixtures it uses."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for fixture, marker in COST_MARKS.items():
            if fixture in used:
                item.add_marker(marker)


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
def train_model(gpt: Taxonomy) -> Callable[..., Path]:
    """`train(root, sizes, config, *flags, **data)`: synthetic training data under `root/data` (sizes per
    split; `data`: more `write_training_data` arguments), then `linnet train` into `root/model` with
    `config` and `flags`; returns the model directory. Every fixture that trains a network calls it."""
    from synthetic_training_data import write_training_data  # TensorFlow: only where a model is needed

    def train(root: Path, sizes: dict[str, int], config: dict[str, Any], *flags: str, **data: Any) -> Path:
        write_training_data(root / "data", gpt, sizes=sizes, **data)
        (root / "config.json").write_text(json.dumps(config))
        assert cli.main(["train", "--data", str(root / "data"), "--config", str(root / "config.json"),
                         "--output", str(root / "model"), *flags]) == 0
        return root / "model"

    return train


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory, train_model: Callable[..., Path]) -> Path:
    """A small model trained once per session on synthetic train and validation splits; its data folder
    (`model_dir.parent / "data"`) also holds a calibration split, held out, to retune on. Tests that
    change the model work on a copy."""
    return train_model(tmp_path_factory.mktemp("score_model"),
                       {"train": 200, "validation": 50, "calibration": 100}, SMALL_CONFIG,
                       "--holdout", "calibration")


@pytest.fixture(scope="session")
def prepared_models() -> dict[str, str]:
    """The default encoders, prepared on first use (a no-op afterwards): `prepare_models`' manifest."""
    from linnet_core.encoders.prepare import prepare_models

    return prepare_models(defaults.MODELS)


@pytest.fixture(scope="session")
def models_dir(prepared_models: dict[str, str]) -> str:
    """The prepared encoders' folder."""
    return str(defaults.MODELS)


@pytest.fixture(scope="session")
def bq_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """One BigQuery emulator for the session; tests keep apart through their own datasets."""
    with running_emulator(tmp_path_factory.mktemp("bqemulator")) as running:
        yield running


@pytest.fixture(scope="session")
def bq_connection(bq_emulator: Emulator):
    """A `pipelines.bigquery.BigQueryConnection` to the session's emulator."""
    from pipelines import bigquery as bq

    return bq.BigQueryConnection(bq_emulator.project, bq_emulator.endpoint, bq_emulator.storage_endpoint)


@pytest.fixture
def bq_dataset(bq_connection) -> str:
    """A fresh dataset per test, so tests never see each other's tables."""
    name = f"{bq_connection.project}.t_{uuid.uuid4().hex[:10]}"
    bq_connection.client().create_dataset(name)
    return name
