"""`linnet evaluate` on crafted predictions and labels over the tiny taxonomy, and the TF-IDF baseline."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from linnet_core import metrics
from linnet_core.capped_sample import capped_rows
from linnet_core.evaluation import baseline_models, baselines, report
from linnet_core.evaluation.systems import EvaluationError, parquet_files, read_labels, read_predictions
from linnet_core.model.data import read_split
from linnet_core.training_data import hash_unit
from pipelines import cli, evaluate_command

# Same cases as test_metrics: exact, back-off, wrong sibling, abstained, wrong level 2, unlabelled
# (no label row), unlabelled (null label), deeper than the label.
PATHS = [[1, 2, 3], [1, 2, 3], [1, 2, 4], [10, 12, 13], [10, 11, -1], [1, 5, -1], [10, 11, -1], [10, 12, 13]]
CONFIDENCES = [[0.99, 0.9, 0.8], [0.9, 0.8, 0.3], [0.9, 0.8, 0.7], [0.4, 0.3, 0.2], [0.9, 0.6, 0.0],
               [0.8, 0.7, 0.0], [0.3, 0.2, 0.0], [0.95, 0.9, 0.85]]
PREDICTED = [3, 2, 4, None, 11, 5, None, 13]
TRUE = [3, 3, 3, 13, 13, "no row", None, 12]
LANGS = ["en", "en", "fr", "fr", "en", "en", "de", "en"]


def _write_inputs(tmp_path, predicted=PREDICTED, stores=None):
    ids = [f"s1-{i}" for i in range(len(PATHS))]
    predictions = pa.table({
        "product_id": ids,
        "gpt_id": pa.array(predicted, pa.int64()),
        "level_ids": [p + [-1] * 4 for p in PATHS],
        "level_confidences": [c + [0.0] * 4 for c in CONFIDENCES],
        "decision": ["leaf" if p is not None else "abstained" for p in predicted],
        "model_version": ["m1"] * len(ids),
        "taxonomy_version": ["tiny-1"] * len(ids),
        "thresholds_version": ["p0.9-abc"] * len(ids),
    })
    (tmp_path / "scored" / "partition=x").mkdir(parents=True)
    pq.write_table(predictions, tmp_path / "scored" / "partition=x" / "part-0.parquet")
    rows = [i for i, t in enumerate(TRUE) if t != "no row"]
    labels = pa.table({
        "product_id": [ids[i] for i in rows],
        "gpt_id": pa.array([TRUE[i] for i in rows], pa.int64()),
        "lang": [LANGS[i] for i in rows],
        "store": stores or ["s1"] * len(rows),
        "title": [f"product {i}" for i in rows],
    })
    pq.write_table(labels, tmp_path / "labels.parquet")
    return tmp_path / "scored", tmp_path / "labels.parquet"


def test_evaluate_command_writes_every_key_and_the_report(tmp_path, tiny_taxonomy_file, capsys):
    predictions, labels = _write_inputs(tmp_path)
    output = tmp_path / "evaluation"
    code = cli.main(["evaluate", "--predictions", str(predictions), "--labels", str(labels),
                     "--taxonomy", str(tiny_taxonomy_file), "--output", str(output)])
    assert code == 0
    result = json.loads((output / "metrics.json").read_text())
    for key in ("hP", "hR", "hF1", "exact_accuracy", "coverage", "level_accuracy", "depth_coverage",
                "leaf_precision", "aurc", "ece", "n", "n_labelled", "model_version", "taxonomy_version",
                "thresholds_version"):
        assert key in result, key
    assert result["hP"] == pytest.approx(10 / 13) and result["hF1"] == pytest.approx(2 / 3)
    assert result["coverage"] == pytest.approx(6 / 8) and (result["n"], result["n_labelled"]) == (8, 6)
    assert result["level_accuracy"] == pytest.approx([5 / 6, 4 / 6, 1 / 5])  # the tiny tree has 3 levels
    # AURC over the 6 labelled products, path ends by confidence: 13 for 12 (0.85, wrong), 3 (0.8), 4 for 3
    # (0.7, wrong), 11 for 13 (0.6, wrong), 3 (0.3), 13 (0.2): (1 + 1/2 + 2/3 + 3/4 + 3/5 + 3/6) / 6.
    assert result["aurc"] == pytest.approx(241 / 360)
    # Level 1 is right for all six, so its ECE is the mean of 1 − confidence whatever the bins.
    assert len(result["ece"]) == 3
    assert result["ece"][0] == pytest.approx((0.01 + 0.1 + 0.1 + 0.6 + 0.1 + 0.05) / 6)
    assert (result["model_version"], result["taxonomy_version"], result["thresholds_version"]) == (
        "m1", "tiny-1", "p0.9-abc")
    # Operating curve of ours without calibration data: a uniform sweep with back-off.
    assert result["operating_curves"]["ours"][0]["coverage"] == pytest.approx(1.0)
    text = (output / "report.md").read_text()
    assert "By level-1 branch of the label" in text and "| Animals | 3 | 3 | 1.000 | 0.875 |" in text
    assert "| Toys | 3 | 3 | 0.667 | 0.600 |" in text and "| (unlabelled) | 2 | 0 | 0.500 |" in text
    assert "By language" in text and "| en | 4 | 4 |" in text and "| de | 1 | 0 | 0.000 |" in text
    for plot in ("risk_coverage.png", "precision_coverage_levels.png", "operating_curves.png",
                 "confusion_level1.png"):
        assert (output / plot).read_bytes()[:4] == b"\x89PNG", plot
        assert f"({plot})" in text
    assert json.loads(capsys.readouterr().out)["n_labelled"] == 6


def test_capped_per_store_block_on_a_crafted_example(tmp_path, tiny_taxonomy_file):
    """Cap 2: store a (rows 0–3) keeps the two smallest sha256(product_id), s1-0 and s1-3; store b
    (rows 4, 6, 7) keeps s1-6 and s1-4; s1-5 has no label row, hence no store ("unknown"), and stays.
    Kept: exact (|α∩β| 3 of 3), abstained on 13 (β 3), 11 for 13 (1 of α 2, β 3), two unlabelled."""
    predictions, labels = _write_inputs(tmp_path, stores=["a", "a", "a", "a", "b", "b", "b"])
    output = tmp_path / "evaluation"
    assert cli.main(["evaluate", "--predictions", str(predictions), "--labels", str(labels), "--taxonomy",
                     str(tiny_taxonomy_file), "--output", str(output), "--max-products-per-store", "2"]) == 0
    result = json.loads((output / "metrics.json").read_text())
    capped = result["capped_per_store"]
    assert (capped["max_products_per_store"], capped["n_stores"], capped["n"],
            capped["n_labelled"]) == (2, 3, 5, 3)
    assert capped["hP"] == pytest.approx(4 / 5) and capped["hR"] == pytest.approx(4 / 9)
    assert capped["hF1"] == pytest.approx(4 / 7) and capped["coverage"] == pytest.approx(3 / 5)
    assert capped["exact_accuracy"] == pytest.approx(1 / 3)
    assert capped["level_accuracy"] == pytest.approx([2 / 3, 1 / 3, 1 / 3])
    assert capped["systems"]["ours"]["hF1"] == pytest.approx(4 / 7)
    assert result["hF1"] == pytest.approx(2 / 3)  # the uncapped figures are unchanged
    text = (output / "report.md").read_text()
    assert "## At most 2 products per store (as the acceptance set)" in text and "hF1 0.571" in text
    assert cli.main(["evaluate", "--predictions", str(predictions), "--labels", str(labels), "--taxonomy",
                     str(tiny_taxonomy_file), "--output", str(output), "--store-cap", "0"]) == 1  # old name


def test_capped_rows_are_deterministic_and_keep_small_stores_whole():
    ids = np.array([f"p{i}" for i in range(1000)])
    store = np.array(["big"] * 900 + ["small"] * 100)
    rows = capped_rows(ids, store, 150)
    assert len(rows) == 250 and (store[rows] == "big").sum() == 150
    assert set(range(900, 1000)) <= set(rows.tolist()) and np.all(np.diff(rows) > 0)
    shuffled = np.random.default_rng(0).permutation(1000)
    assert set(ids[shuffled][capped_rows(ids[shuffled], store[shuffled], 150)]) == set(ids[rows])
    with pytest.raises(ValueError, match="cap"):
        capped_rows(ids, store, 0)


def test_evaluate_is_reproducible(tmp_path, tiny_taxonomy_file):
    predictions, labels = _write_inputs(tmp_path)
    outputs = []
    for name in ("a", "b"):
        evaluate_command.main(["--predictions", str(predictions), "--labels", str(labels),
                               "--taxonomy", str(tiny_taxonomy_file), "--output", str(tmp_path / name)])
        outputs.append([(tmp_path / name / file).read_text() for file in ("metrics.json", "report.md")])
    assert outputs[0] == outputs[1]


def test_a_committed_table_is_read_through_its_manifests(tmp_path, tiny_taxonomy_file):
    """Only the files a partition manifest names count: not a file beside them (a commit under way on
    an object store) nor a partition without a manifest (never committed)."""
    predictions, _ = _write_inputs(tmp_path)
    committed = predictions / "partition=x"
    (committed / "_SUCCESS").write_text(json.dumps({"files": ["part-0.parquet"]}))
    pq.write_table(pq.read_table(committed / "part-0.parquet").slice(0, 1), committed / "part-9.parquet")
    uncommitted = predictions / "partition=y"
    uncommitted.mkdir()
    pq.write_table(pq.read_table(committed / "part-0.parquet"), uncommitted / "part-0.parquet")
    assert parquet_files(str(predictions)) == [str(committed / "part-0.parquet")]
    assert len(read_predictions(str(predictions)).product_ids) == len(PATHS)


def test_bad_inputs_fail_with_a_clear_message(tmp_path, tiny_taxonomy_file, capsys):
    predictions, labels = _write_inputs(tmp_path)
    pq.write_table(pq.read_table(predictions / "partition=x" / "part-0.parquet").slice(0, 1),
                   predictions / "partition=x" / "part-1.parquet")
    code = evaluate_command.main(["--predictions", str(predictions), "--labels", str(labels), "--taxonomy",
                                  str(tiny_taxonomy_file), "--output", str(tmp_path / "out")])
    assert code == 1 and "duplicate product ids" in capsys.readouterr().err
    assert evaluate_command.main(["--predictions", str(predictions), "--output", str(tmp_path / "o")]) == 1
    assert "--labels" in capsys.readouterr().err
    with pytest.raises(EvaluationError, match="missing columns"):
        pq.write_table(pa.table({"product_id": ["x"]}), tmp_path / "bad.parquet")
        read_predictions(str(tmp_path / "bad.parquet"))


def test_tfidf_texts_default_to_the_shared_products_at_the_command_only(tmp_path):
    """The default products file is the pipelines layer's (`pipelines.defaults`); the core needs it given."""
    from linnet_core.evaluation.evaluate import EvaluationConfig, _tfidf
    from pipelines import defaults

    config = evaluate_command.parse_config(["--predictions", "p", "--labels", "l", "--output", str(tmp_path)])
    assert config.products == defaults.PRODUCTS_JSONL
    bare = EvaluationConfig(taxonomy_file="t", output=str(tmp_path), predictions="p", labels="l")
    with pytest.raises(EvaluationError, match="--products"):
        _tfidf(bare, None, None)


def test_unknown_predicted_id_is_an_error(tmp_path, tiny_taxonomy_file, capsys):
    predictions, labels = _write_inputs(tmp_path, predicted=[3, 2, 4, None, 11, 5, None, 999])
    code = evaluate_command.main(["--predictions", str(predictions), "--labels", str(labels), "--taxonomy",
                                  str(tiny_taxonomy_file), "--output", str(tmp_path / "out")])
    assert code == 1 and "999" in capsys.readouterr().err


def test_read_labels_nulls_are_unlabelled(tmp_path):
    _, labels = _write_inputs(tmp_path)
    read = read_labels(str(labels))
    assert read.gpt_id.tolist() == [3, 3, 3, 13, 13, -1, 12] and read.lang[0] == "en"


def test_tfidf_baseline_paths_and_subtree_confidences(tiny):
    table = metrics.AncestorTable(tiny)
    texts = ["dog leash collar", "dog bowl", "cat toy mouse", "cat litter", "jigsaw puzzle 1000",
             "jigsaw puzzle wood", "doll house", "barbie doll"] * 3
    labels = np.array([3, 3, 4, 4, 13, 13, 11, 11] * 3)
    model = baselines.TfidfBaseline(table).fit(texts, labels)
    out = model.predict(np.array(["a", "b"]), ["dog collar", "wooden jigsaw puzzle"])
    assert out.gpt_id.tolist() == [3, 13]
    assert out.level_ids[:, :3].tolist() == [[1, 2, 3], [10, 12, 13]]
    # A node's confidence is the mass of the classes under it: never rising down the path.
    assert np.all(np.diff(out.level_confidences[:, :3], axis=1) <= 1e-12)
    assert out.level_confidences[0, 1] == pytest.approx(out.level_confidences[0, 0])  # Animals = Pets here
    again = baselines.TfidfBaseline(table).fit(texts, labels).predict(np.array(["a"]), ["dog collar"])
    assert again.level_confidences[0].tolist() == out.level_confidences[0].tolist()


def test_tfidf_temperature_from_the_second_process_equals_fitting_in_this_one():
    # The half model trains in a spawned process beside the full fit: same temperature as in-process.
    words = ["dog leash", "cat toy", "jigsaw puzzle", "barbie doll", "garden hose", "coffee mug"]
    texts = [f"{words[i % 6]} {'red blue green'.split()[i % 3]} item {i}" for i in range(60)]
    labels = np.array([3, 4, 13, 11, 7, 9] * 10)
    stores = [f"store-{i % 10}" for i in range(60)]
    half = np.array([hash_unit(f"tfidf:{store}") < 0.5 for store in stores])
    assert half.any() and (~half).any()
    model = baseline_models.TfidfSvm().fit(texts, labels, stores)
    assert model.temperature == baseline_models.held_out_temperature(texts, labels, half)
    assert model.temperature != 1.0


def test_operating_curve_and_coverage_at_precision(tiny):
    table = metrics.AncestorTable(tiny)
    system = baselines.SystemOutput("ours", np.array(["a", "b", "c"], dtype=object), np.array([3, -1, 12]),
                                    np.array([[1, 2, 3, -1, -1, -1, -1], [10, 11, -1, -1, -1, -1, -1],
                                              [10, 12, 13, -1, -1, -1, -1]]),
                                    np.array([[0.9, 0.8, 0.7, 0, 0, 0, 0], [0.5, 0.4, 0, 0, 0, 0, 0],
                                              [0.9, 0.6, 0.3, 0, 0, 0, 0]]))
    labels = report.Labels(system.product_ids, np.array([3, 12, 12]), np.array(["en"] * 3, dtype=object),
                           np.array(["s"] * 3, dtype=object))
    settings = report.uniform_settings(steps=3)  # t = 0, 0.5, 1
    back_off = report.operating_curve(system, labels, table, settings, back_off=True)
    # t=0.5: a → 3 (right, 3 nodes), b → 10 (1 right node), c → 12 (2 right): hP = 6/6.
    assert back_off[1].coverage == pytest.approx(1.0) and back_off[1].hP == pytest.approx(1.0)
    strict = report.operating_curve(system, labels, table, settings, back_off=False)
    assert strict[1].coverage == pytest.approx(1 / 3) and strict[0].hP == pytest.approx(6 / 8)
    assert report.coverage_at_precision(back_off + strict, 0.8).coverage == pytest.approx(1.0)
    assert report.coverage_at_precision(strict[:1], 0.8) is None


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory, gpt, train_model):
    """A small model trained on synthetic TFRecords (with a calibration split) and a products JSONL
    whose titles name each product's category (noisily), for the TF-IDF baseline."""
    root = tmp_path_factory.mktemp("tuning")
    train_model(root, {"train": 800, "validation": 300, "calibration": 400},
                {"shared_units": [64], "level_units": [32], "epochs": 4, "batch_size": 64, "dropout": 0.1},
                "--holdout", "validation", num_labels=25)
    rng = np.random.default_rng(0)
    with open(root / "products.jsonl", "w", encoding="utf-8") as handle:
        for split in ("train", "validation", "calibration"):
            arrays = read_split(root / "data", split)
            for pid, gpt_id in zip(arrays["product_id"], arrays["gpt_id"], strict=True):
                words = gpt.node(int(gpt_id)).name if rng.random() < 0.7 else "misc item"
                handle.write(json.dumps({"product_id": pid, "store": "s", "title": f"{words} {pid}"}) + "\n")
    return root


@pytest.mark.slow
def test_tune_thresholds_then_evaluate_with_baselines(trained_model, tmp_path):
    from linnet_core.calibration.thresholds import CLOSED, load_thresholds
    from linnet_core.model.export import read_model_json
    from linnet_core.model.predictor import Predictor

    model, data = trained_model / "model", trained_model / "data"
    assert cli.main(["tune-thresholds", "--model", str(model), "--data", str(data),
                     "--target-precision", "0.8"]) == 0
    tuned = load_thresholds(model / "calibration.json")
    assert tuned.version.startswith("p0.8-") and tuned.target_precision == 0.8
    assert tuned.overrides[772] == 0.95 and tuned.temperatures != (1.0,) * 7
    assert read_model_json(model)["thresholds_version"] == tuned.version
    assert Predictor(model).thresholds_version == tuned.version
    evidence = json.loads((model / "thresholds_report.json").read_text())
    assert len(evidence["ece_unfused"]) == len(evidence["ece_after"]) == 7
    assert all(level["upper_bound"] <= 0.2 or level["threshold"] == CLOSED for level in evidence["levels"])
    # Cross-fitted over the train and calibration stores (7 synthetic stores), capped per store.
    assert evidence["calibration"]["folds"] == 5 and evidence["calibration"]["stores"] == 7
    assert evidence["calibration"]["products"] == evidence["n_labelled"] <= 7 * 150
    # No category embeddings: no priors; the store context after a first pass over the exemplars.
    assert set(tuned.evidence_weights) == {"exemplars", "store_context"}
    assert set(tuned.first_pass.evidence_weights) == {"exemplars"} and "first_pass" in evidence
    assert (model / "calibration_paths.npz").exists()

    outputs = []
    for name in ("first", "second"):
        assert cli.main(["evaluate", "--model", str(model), "--training-data", str(data), "--output",
                         str(tmp_path / name), "--products", str(trained_model / "products.jsonl")]) == 0
        outputs.append((tmp_path / name / "metrics.json").read_text())
    assert outputs[0] == outputs[1]  # reproducible run to run
    result = json.loads(outputs[0])
    assert set(result["systems"]) == {"tfidf", "published", "published_on_ours", "ours"}
    assert result["n"] == 300
    assert result["thresholds_version"] == tuned.version and result["cut_rule_mismatches"] == 0
    assert result["systems"]["tfidf"]["coverage"] == 1.0 and 0.0 <= result["unseen_label_share"] <= 1.0
    assert set(result["operating_curves"]) == {"tfidf", "published", "published_on_ours", "ours",
                                               "ours_uniform"}
    assert isinstance(result["comparison"]["ours_doubles_published_coverage"], bool)
    assert len(result["operating_curves"]["ours"]) == 12  # one point per precision target of the grid
    text = (tmp_path / "first" / "report.md").read_text()
    assert all(title in text for title in baselines.TITLES.values())


@pytest.mark.slow
def test_evaluating_a_categorized_table_equals_evaluating_the_model(trained_model, tmp_path):
    from linnet_core.model.predictor import Predictor

    model, data = trained_model / "model", trained_model / "data"
    split = read_split(data, "validation")
    ours = baselines.model_system(Predictor(model), split)
    n = len(ours.product_ids)
    pq.write_table(pa.table({
        "product_id": list(ours.product_ids),
        "gpt_id": pa.array([None if g == -1 else int(g) for g in ours.gpt_id], pa.int64()),
        "level_ids": ours.level_ids.tolist(), "level_confidences": ours.level_confidences.tolist(),
        **{column: [ours.versions[column]] * n for column in ("model_version", "taxonomy_version",
                                                               "thresholds_version")},
    }), tmp_path / "scored.parquet")
    pq.write_table(pa.table({"product_id": list(split["product_id"]), "gpt_id": split["gpt_id"].tolist(),
                             "lang": list(split["lang"]), "store": list(split["store"])}),
                   tmp_path / "labels.parquet")
    common = ["--model", str(model), "--training-data", str(data), "--baselines", "published"]
    assert cli.main(["evaluate", "--predictions", str(tmp_path / "scored.parquet"), "--labels",
                     str(tmp_path / "labels.parquet"), "--output", str(tmp_path / "table"), *common]) == 0
    assert cli.main(["evaluate", "--output", str(tmp_path / "model"), *common]) == 0
    from_table, from_model = (json.loads((tmp_path / name / "metrics.json").read_text())
                              for name in ("table", "model"))
    assert from_table["cut_rule_mismatches"] == 0
    for key in ("hP", "hR", "hF1", "coverage", "level_accuracy", "aurc", "ece", "n", "n_labelled",
                "thresholds_version", "systems", "comparison"):
        assert from_table[key] == from_model[key], key


def test_parent_indexes(tiny):
    from linnet_core.calibration.tuning import parent_indexes

    # Level 2 is [2, 5, 11, 12] under [1, 10]; level 3 is [3, 4, 13] under [2, 2, 12].
    assert [p.tolist() for p in parent_indexes(tiny)] == [[-1, -1], [0, 0, 1, 1], [0, 0, 3]]


def test_level1_confusion_counts_decoded_branches(tmp_path, tiny):
    table = metrics.AncestorTable(tiny)
    system = baselines.SystemOutput("ours", np.array(["a", "b", "c"], dtype=object), np.array([-1, 3, 12]),
                                    np.array([[10, 11, -1, -1, -1, -1, -1], [1, 2, 3, -1, -1, -1, -1],
                                              [-1] * 7]), np.zeros((3, 7)))
    labels = report.Labels(system.product_ids, np.array([3, 4, 13]), np.array(["en"] * 3, dtype=object),
                           np.array(["s"] * 3, dtype=object))
    names, matrix = report.level1_confusion(system, labels, table)
    # Rows and columns: Animals, Toys, then (none). An abstention still shows its decoded branch.
    assert names == ["Animals", "Toys"] and matrix.tolist() == [[1, 1, 0], [0, 0, 1]]


def test_parquet_files_of_a_scoring_output_skip_staging_and_dead_letters(tmp_path):
    from linnet_core.evaluation.systems import parquet_files

    for relative in ("categorized/date=2026-11-24/part-0.parquet", "categorized/_staging/x/part-0.parquet",
                     "dead_letters/date=2026-11-24/part-0.parquet", "categorized/.hidden.parquet"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"")
    assert parquet_files(str(tmp_path)) == [str(tmp_path / "categorized/date=2026-11-24/part-0.parquet")]
    with pytest.raises(EvaluationError, match="no Parquet files"):
        parquet_files(str(tmp_path / "nothing-*.parquet"))


@pytest.mark.slow
def test_cross_validation_judges_ours_and_the_baselines_on_the_same_store_folds(trained_model, tmp_path):
    from linnet_core.evaluation import crossval

    output = tmp_path / "crossval"
    assert cli.main(["cross-validate", "--data", str(trained_model / "data"), "--model",
                     str(trained_model / "model"), "--output", str(output), "--folds", "3",
                     "--products", str(trained_model / "products.jsonl")]) == 0
    result = json.loads((output / crossval.CROSSVAL_JSON).read_text())
    assert set(result["systems"]) == {crossval.OURS, crossval.FIRST_PASS, *crossval.BASELINES}
    folds = {len(entry["per_fold"]) for entry in result["systems"].values()}
    assert folds == {3}  # every system on every fold
    sizes = {name: [f["n"] for f in entry["per_fold"]] for name, entry in result["systems"].items()}
    assert len({tuple(n) for n in sizes.values()}) == 1  # ... on exactly the same products
    # 1,500 products of 7 synthetic stores (~214 each), at most 150 per store evaluated.
    assert result["products"] == sum(sizes[crossval.OURS]) == 7 * 150 and result["stores"] == 7
    for name, entry in result["systems"].items():
        summary = entry["summary"]
        assert 0.0 <= summary["hF1"]["mean"] <= 1.0 and summary["hF1"]["sd"] >= 0.0, name
        assert len(result["curves"][name]) == 41
    # The synthetic embeddings are learnable: the embedding baselines beat chance at level 1 (1/25 labels).
    assert result["systems"][crossval.LEVEL_LR]["summary"]["level1_accuracy"]["mean"] > 0.3
    assert result["systems"][crossval.TFIDF]["summary"]["coverage"]["mean"] == 1.0
    assert (output / "crossval.md").exists() and (output / "crossval.png").exists()
