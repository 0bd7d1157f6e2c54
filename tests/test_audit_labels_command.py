"""`linnet audit-labels` end to end on a sample of the shared labelled products (real encoders, a small
model), then `linnet train --label-audit` on its review table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SMALL_CONFIG

from linnet_core import label_audit
from linnet_core.evaluation import auditing
from linnet_core.model.data import read_splits
from linnet_core.training_data import SPLITS
from pipelines import build_training_data, cli

pytestmark = [pytest.mark.slow, pytest.mark.trains_model, pytest.mark.encoders, pytest.mark.shared_data]
SAMPLE = 300


@pytest.fixture(scope="module")
def audited(tmp_path_factory) -> Path:
    """Training data of SAMPLE shared products, a small model on every split, and its audit."""
    root = tmp_path_factory.mktemp("audit")
    build_training_data.run(["--sample", str(SAMPLE), "--output", str(root / "data"), "--shards", "1"])
    (root / "config.json").write_text(json.dumps(SMALL_CONFIG))
    assert cli.main(["train", "--data", str(root / "data"), "--config", str(root / "config.json"),
                     "--output", str(root / "model")]) == 0
    assert cli.main(["audit-labels", "--model", str(root / "model"), "--data", str(root / "data"),
                     "--output", str(root / "audit"), "--folds", "3"]) == 0
    return root


def test_the_review_table_ranks_disputed_labels_of_the_shared_products(audited: Path):
    audit = audited / "audit"
    table = pd.read_parquet(audit / f"{auditing.REVIEW}.parquet")
    assert list(table.columns) == list(label_audit.REVIEW_COLUMNS)
    assert pd.read_csv(audit / f"{auditing.REVIEW}.csv")["product_id"].astype(str).tolist() == table[
        "product_id"].tolist()
    assert len(table) > 0 and table["product_id"].is_unique
    assert (np.diff(table["score"]) <= 0).all() and (table["score"] > 0).all()
    assert (table["given_path"] != table["suggested_path"]).all() and (table["distance"] >= 1).all()
    data = read_splits(audited / "data", SPLITS, embeddings=False)
    labels = dict(zip(data["product_id"], data["gpt_id"], strict=True))
    assert all(labels[p] == g for p, g in zip(table["product_id"], table["given_id"], strict=True))
    summary = json.loads((audit / auditing.SUMMARY_JSON).read_text())
    assert summary["audited"] == len(labels) and summary["flagged"] == len(table)
    branches = pd.read_csv(audit / f"{auditing.STORE_BRANCHES}.csv")
    assert branches["products"].sum() == len(labels) and branches["flagged"].sum() == len(table)
    assert "## Label audit" in (audit / auditing.REPORT_MD).read_text()
    assert (audit / auditing.PLOT_PNG).stat().st_size > 0


def test_training_on_audited_labels_records_what_it_dropped(audited: Path):
    flagged = auditing.flagged_products(audited / "audit")
    assert cli.main(["train", "--data", str(audited / "data"), "--config", str(audited / "config.json"),
                     "--output", str(audited / "model-audited"), "--label-audit", str(audited / "audit"),
                     "--flagged-weight", "0.25"]) == 0
    training = json.loads((audited / "model-audited" / "model.json").read_text())["training"]
    assert training["flagged_labels"] == len(flagged) and training["flagged_weight"] == 0.25
    assert cli.main(["train", "--data", str(audited / "data"), "--output", str(audited / "bad"),
                     "--label-audit", str(audited / "data")]) == 1  # not an audit: one line, exit 1


def test_the_cross_validation_audits_each_fold_on_the_other_folds_only(audited: Path):
    from linnet_core.calibration import crossfit
    from linnet_core.model.export import TAXONOMY_COPY
    from linnet_core.taxonomy import Taxonomy
    from linnet_core.training_data import store_folds

    taxonomy = Taxonomy.load(audited / "model" / TAXONOMY_COPY)
    pool = read_splits(audited / "data", SPLITS, weights=True)
    fold = store_folds(pool["store"], 3)
    audit_others = auditing.audited_weights(audited / "model", audited / "data", taxonomy, 3, 0.0)
    seen = {}

    def weights(held_out: int, others: dict) -> np.ndarray:
        seen[held_out] = set(others["store"])
        if held_out:
            return np.ones(len(others["store"]), np.float32)
        factors = audit_others(held_out, others)  # an audit cross-fitted among folds 1 and 2
        assert factors.shape == (len(others["store"]),) and set(np.unique(factors)) == {0.0, 1.0}
        return factors

    training = crossfit.FoldTraining.of(audited / "model", audited / "data", taxonomy)
    scored = crossfit.cross_fit(training, pool, fold, np.arange(len(fold)), weights)
    assert sorted(seen) == [0, 1, 2] and len(scored.gpt_id) == len(fold)
    for held_out, stores in seen.items():  # no held-out store's label reaches its fold's training
        assert stores == set(pool["store"][fold != held_out])
