"""`linnet train` end to end on synthetic TFRecords; the SavedModel in a fresh process; Predictor;
re-export with new thresholds."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from synthetic_training_data import write_training_data

from linnet_core.calibration.thresholds import Thresholds, load_thresholds, save_thresholds
from linnet_core.decisions import ABSTAINED, BACKED_OFF, LEAF
from linnet_core.exemplars import Exemplars
from linnet_core.model.export import export_inference_model, read_model_json
from linnet_core.model.predictor import Predictor, TaxonomyMismatchError
from linnet_core.model.version import directory_version
from linnet_core.taxonomy import Taxonomy
from pipelines import cli

SMALL_CONFIG = {"shared_units": [64], "level_units": [32], "epochs": 3, "batch_size": 64, "dropout": 0.1}
FRESH_PROCESS = textwrap.dedent("""
    import importlib.util, json, sys
    sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
    sys.path[:] = [p for p in sys.path if p not in ("", {root!r})]
    assert importlib.util.find_spec("linnet_core") is None, "project code is importable"
    import numpy as np
    import tensorflow as tf
    model = tf.saved_model.load(sys.argv[1])
    inputs = np.load(sys.argv[2])
    out = model.signatures["serving_default"](**{{name: tf.constant(inputs[name]) for name in inputs.files}})
    meta = model.signatures["metadata"]()
    print(json.dumps({{
        "outputs": {{k: v.numpy().tolist() for k, v in out.items() if k != "decoding"}},
        "decoding": [d.decode() for d in out["decoding"].numpy()],
        "taxonomy_fingerprint": meta["taxonomy_fingerprint"].numpy().decode(),
        "modules": sorted(m for m in sys.modules if m.startswith(("linnet", "pipelines", "tf_keras"))),
    }}))
""")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, train_model) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("train")
    model = train_model(root, {"train": 600, "validation": 150}, SMALL_CONFIG, "--holdout", "validation")
    return model, root / "data"


def _inputs(n: int, seed: int = 1) -> dict[str, np.ndarray]:
    """Model inputs by name: unit text and title vectors, no image."""
    rng = np.random.default_rng(seed)
    text, title = rng.normal(size=(2, n, 384)).astype(np.float32)
    return {"text_embedding": text / np.linalg.norm(text, axis=1, keepdims=True),
            "title_embedding": title / np.linalg.norm(title, axis=1, keepdims=True),
            "image_embedding": np.zeros((n, 1280), np.float32), "image_present": np.zeros(n, np.float32)}


def _assert_valid_paths(taxonomy: Taxonomy, outputs: dict) -> None:
    for row, gpt_id, depth, decision in zip(outputs["level_ids"], outputs["gpt_id"], outputs["depth"],
                                            outputs["decision"], strict=True):
        path = [int(i) for i in row if i >= 0]
        assert [n.id for n in taxonomy.ancestors(path[-1], include_self=True)] == path
        assert taxonomy.node(path[-1]).is_leaf
        assert gpt_id == (path[depth - 1] if depth else -1)
        assert decision == (ABSTAINED if depth == 0 else LEAF if depth == len(path) else BACKED_OFF)


def test_train_writes_the_model_directory(trained: tuple[Path, Path], gpt: Taxonomy) -> None:
    model_dir, _ = trained
    for name in ("saved_model/saved_model.pb", "model.json", "calibration.json", "config.json", "curves.json",
                 "curves.png", "MODEL_CARD.md", "training_model.weights.h5", "exemplars.npz"):
        assert (model_dir / name).exists(), name
    info = read_model_json(model_dir)
    # The exemplar memory is the train split: every product, its title vector and level labels.
    memory = Exemplars.load(model_dir / "exemplars.npz")
    assert memory.vectors.shape == (600, 384) and info["exemplars"] == 600
    memory.check(gpt)
    assert np.all(memory.labels[:, 0] >= 0) and np.allclose(np.linalg.norm(memory.vectors, axis=1), 1.0)
    assert info["taxonomy_fingerprint"] == gpt.fingerprint and info["taxonomy_version"] == "2021-09-21"
    assert info["thresholds_version"] == "default" and info["config"]["epochs"] == 3
    # Everything a worker reads is in the folder, and the version is the hash of it.
    assert (model_dir / "shopify" / "categories" / "categories.en.txt").is_file()
    assert info["model_version"] == directory_version(model_dir) and "shopify" in info["version_parts"]
    assert info["training"]["train_examples"] == 600 and info["training"]["workers"] == 1
    assert set(info["validation"]) == {"greedy/thresholds", "greedy/no_thresholds", "exact/thresholds",
                                       "exact/no_thresholds"}
    assert info["validation"]["exact/no_thresholds"]["coverage"] == 1.0
    curves = json.loads((model_dir / "curves.json").read_text())
    assert curves["epochs"] == [1, 2, 3] and sorted(curves["levels"]) == [f"level_{k}" for k in range(1, 8)]
    assert len(curves["levels"]["level_1"]["val_accuracy"]) == 3
    # The synthetic labels are learnable: level-1 validation accuracy beats chance (1/21) clearly.
    assert curves["levels"]["level_1"]["val_accuracy"][-1] > 0.3
    assert "hF1" in (model_dir / "MODEL_CARD.md").read_text()
    assert info["training"]["splits"] == ["train"] and info["training"]["held_out_splits"] == ["validation"]


def test_production_model_learns_from_every_split(trained: tuple[Path, Path], tmp_path: Path) -> None:
    _, data = trained
    config = trained[0].parent / "config.json"
    assert cli.main(["train", "--data", str(data), "--config", str(config), "--output", str(tmp_path)]) == 0
    info = read_model_json(tmp_path)
    # No --holdout: the network and the memory learn from every split there is (no calibration split here).
    assert info["training"]["splits"] == ["train", "validation"] and info["training"]["held_out_splits"] == []
    assert info["exemplars"] == 750 and info["training"]["train_examples"] == 750
    assert "validation" not in info or not info["validation"]
    assert "None: the model learnt from every labelled store" in (tmp_path / "MODEL_CARD.md").read_text()
    assert cli.main(["train", "--data", str(data), "--config", str(config), "--output", str(tmp_path / "x"),
                     "--holdout", "train", "--holdout", "validation"]) == 1


@pytest.mark.subprocesses
def test_saved_model_runs_in_a_fresh_process_without_project_code(trained: tuple[Path, Path], gpt: Taxonomy,
                                                                  tmp_path: Path) -> None:
    model_dir, _ = trained
    copy = shutil.copytree(model_dir / "saved_model", tmp_path / "exported")
    inputs = _inputs(16)
    result = _fresh_process_outputs(Path(copy), inputs, tmp_path)
    assert result["modules"] == [] and result["taxonomy_fingerprint"] == gpt.fingerprint
    assert result["decoding"] == ["exact"] * 16
    fresh = {name: np.array(value) for name, value in result["outputs"].items()}
    _assert_valid_paths(gpt, fresh)
    here = Predictor(model_dir, gpt).predict(inputs)
    for name in ("level_ids", "gpt_id", "depth", "decision"):
        np.testing.assert_array_equal(fresh[name], here[name])
    np.testing.assert_allclose(fresh["level_confidences"], here["level_confidences"], rtol=1e-5)


def test_predictor_modes_thresholds_and_probabilities(trained: tuple[Path, Path], gpt: Taxonomy) -> None:
    predictor = Predictor(trained[0], gpt, batch_size=7)
    inputs = _inputs(20)
    results = {mode: predictor.predict(inputs, decoding=mode, thresholds=[0.0] * 7)
               for mode in ("greedy", "exact")}
    for mode, outputs in results.items():
        assert outputs["level_ids"].shape == (20, 7) and list(outputs["decoding"]) == [mode.encode()] * 20
        _assert_valid_paths(gpt, outputs)
        assert np.all(outputs["decision"] == 2)
    ends = {mode: r["level_confidences"][np.arange(20), (r["level_ids"] >= 0).sum(axis=1) - 1]
            for mode, r in results.items()}
    assert np.all(ends["exact"] >= ends["greedy"] * (1 - 1e-4))
    strict = predictor.predict(inputs, thresholds=[0.999] * 7)
    assert np.all(strict["depth"] <= results["exact"]["depth"])
    probabilities = predictor.level_probabilities(inputs)
    assert [probabilities[f"level_{k}"].shape[1] for k in range(1, 8)] == gpt.level_sizes()
    np.testing.assert_allclose(probabilities["level_3"].sum(axis=1), 1.0, rtol=1e-4)
    logits = predictor.level_logits(inputs)
    assert logits["level_1"].shape == (20, 21)
    # The exemplar memory is in the model (the priors are not: no category embeddings here).
    evidence = predictor.level_evidence(inputs)
    assert predictor.evidence == ("exemplars",)
    np.testing.assert_allclose(evidence["exemplars_level_1"].sum(axis=1), 1.0, rtol=1e-5)
    assert not evidence["text_prior_level_1"].any() and evidence["exemplars_level_3"].shape == (20, 1349)
    # fused=False decodes the network alone; with all weights 0 and T = 1 that is what fusion gives.
    network = predictor.predict(inputs, decoding="exact", thresholds=[0.0] * 7, fused=False)
    np.testing.assert_array_equal(network["level_ids"], results["exact"]["level_ids"])


def test_predictor_refuses_another_taxonomy(trained: tuple[Path, Path], tiny: Taxonomy) -> None:
    with pytest.raises(TaxonomyMismatchError, match="fingerprint"):
        Predictor(trained[0], tiny)


def test_a_model_directory_of_the_older_calibration_name_still_loads(trained: tuple[Path, Path],
                                                                    gpt: Taxonomy, tmp_path: Path) -> None:
    """Model directories written before the file's rename hold thresholds.json: deployed ones keep working,
    and the next export writes the new name only."""
    model_dir = shutil.copytree(trained[0], tmp_path / "model")
    (model_dir / "calibration.json").rename(model_dir / "thresholds.json")
    version = read_model_json(model_dir)["model_version"]
    assert directory_version(model_dir) == version
    predictor = Predictor(model_dir, gpt)
    assert predictor.thresholds == load_thresholds(model_dir / "thresholds.json")
    export_inference_model(model_dir)
    assert (model_dir / "calibration.json").exists() and not (model_dir / "thresholds.json").exists()
    assert read_model_json(model_dir)["model_version"] == version


def test_reexport_bakes_new_thresholds_without_retraining(trained: tuple[Path, Path], gpt: Taxonomy,
                                                          tmp_path: Path) -> None:
    model_dir = shutil.copytree(trained[0], tmp_path / "model")
    inputs = _inputs(30)
    version = read_model_json(model_dir)["model_version"]
    export_inference_model(model_dir)  # the same content is the same version
    assert read_model_json(model_dir)["model_version"] == version
    before = Predictor(model_dir, gpt).predict(inputs, thresholds=[0.0] * 7)
    root = before["level_ids"][0, 0]
    tuned = Thresholds(version="tuned-1", levels=(0.0,) * 7, overrides={int(root): 1.0})
    save_thresholds(tuned, tmp_path / "tuned.json")
    export_inference_model(model_dir, tmp_path / "tuned.json")
    predictor = Predictor(model_dir, gpt)
    assert predictor.thresholds_version == "tuned-1" == read_model_json(model_dir)["thresholds_version"]
    # New thresholds are new content: a new model version, in the SavedModel and in model.json.
    assert predictor.model_version == read_model_json(model_dir)["model_version"] != version
    assert load_thresholds(model_dir / "calibration.json") == tuned
    after = predictor.predict(inputs)
    np.testing.assert_array_equal(after["level_ids"], before["level_ids"])
    in_subtree = before["level_ids"][:, 0] == root
    assert np.all(after["gpt_id"][in_subtree] == -1)
    np.testing.assert_array_equal(after["gpt_id"][~in_subtree], before["gpt_id"][~in_subtree])
    unknown = Thresholds(version="bad", levels=(0.0,) * 7, overrides={123456789: 0.5})
    save_thresholds(unknown, tmp_path / "bad.json")
    with pytest.raises(ValueError, match="123456789"):
        export_inference_model(model_dir, tmp_path / "bad.json")


def test_predictor_rejects_bad_inputs_and_accepts_none(trained: tuple[Path, Path]) -> None:
    predictor = Predictor(trained[0])
    inputs = _inputs(4)
    with pytest.raises(ValueError, match="text_embedding must have shape"):
        predictor.predict({**inputs, "text_embedding": inputs["text_embedding"][:, :128]})
    with pytest.raises(ValueError, match="disagree"):
        predictor.predict({**inputs, "image_embedding": inputs["image_embedding"][:3]})
    with pytest.raises(ValueError, match="missing model inputs"):
        predictor.predict({name: value for name, value in inputs.items() if name != "title_embedding"})
    inputs["title_embedding"][2, 5] = np.nan
    with pytest.raises(ValueError, match=r"non-finite values in 1 rows, first \[2\]"):
        predictor.predict(inputs)
    empty = predictor.predict(_inputs(0))
    assert empty["level_ids"].shape == (0, 7) and empty["gpt_id"].shape == (0,)


def _fresh_process_outputs(saved_model: Path, inputs: dict[str, np.ndarray], tmp_path: Path,
                           width: int = 213) -> dict:
    """serving_default in a process without the project's code; no store context (zeros of the GPT width)."""
    context = np.zeros((len(inputs["text_embedding"]), width), np.float32)
    np.savez(tmp_path / "inputs.npz", **inputs, store_context=context)
    script = tmp_path / "load.py"
    script.write_text(FRESH_PROCESS.format(root=str(Path(__file__).resolve().parent.parent)))
    done = subprocess.run([sys.executable, str(script), str(saved_model), str(tmp_path / "inputs.npz")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={"TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_evidence_is_baked_in_and_fused(trained: tuple[Path, Path], gpt: Taxonomy, tmp_path: Path) -> None:
    """Category embeddings and an exemplar memory in the model directory plus evidence weights in the
    thresholds: the SavedModel computes the priors of both texts (checked against a numpy subtree max),
    fuses L/T + Σ w·E everywhere, and still runs in a fresh process without project code."""
    from linnet_core.category_prior import CATEGORY_EMBEDDINGS, CategoryEmbeddings, node_ids

    model_dir = Path(shutil.copytree(trained[0], tmp_path / "model"))
    ids = node_ids(gpt)
    vectors = np.random.default_rng(3).normal(size=(len(ids), 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    (model_dir / CATEGORY_EMBEDDINGS).write_bytes(
        CategoryEmbeddings(np.array(ids), vectors, "random/1", gpt.fingerprint).to_bytes())
    weights = {"text_prior": (6.0, 3.0, 1.0, 0.0, 0.0, 0.0, 0.0), "title_prior": (2.0,) * 7,
               "exemplars": (1.5,) * 7}
    fused = Thresholds(version="fused-1", levels=(0.0,) * 7, temperatures=(1.5,) * 7,
                       evidence_weights=weights)
    save_thresholds(fused, tmp_path / "fused.json")
    export_inference_model(model_dir, tmp_path / "fused.json")
    predictor = Predictor(model_dir, gpt)
    assert predictor.evidence == ("text_prior", "title_prior", "exemplars")
    inputs = _inputs(12, seed=4)
    evidence = predictor.level_evidence(inputs)
    logits = predictor.level_logits(inputs)
    probabilities = predictor.level_probabilities(inputs)
    for level in (1, 2, 3):
        classes = gpt.level_ids(level)
        expected = {}
        for name, embedding in (("text_prior", "text_embedding"), ("title_prior", "title_embedding")):
            cosines = inputs[embedding] @ vectors.T
            expected[name] = np.full((12, len(classes)), -np.inf)
            for column, node_id in enumerate(ids):
                ancestors = gpt.ancestors(node_id, include_self=True)
                if len(ancestors) >= level:
                    j = gpt.level_index(ancestors[level - 1].id)
                    expected[name][:, j] = np.maximum(expected[name][:, j], cosines[:, column])
            np.testing.assert_allclose(evidence[f"{name}_level_{level}"], expected[name], atol=1e-5)
        expected["exemplars"] = evidence[f"exemplars_level_{level}"]
        scores = logits[f"level_{level}"] / 1.5 + sum(weights[name][level - 1] * expected[name]
                                                      for name in weights)
        softmax = np.exp(scores - scores.max(axis=1, keepdims=True))
        softmax /= softmax.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(probabilities[f"level_{level}"], softmax, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(predictor.metadata["text_prior_weights"], weights["text_prior"])
    assert predictor.metadata["category_encoder_id"] == "random/1" and predictor.metadata["exemplars"] == 600
    fresh = _fresh_process_outputs(model_dir / "saved_model", inputs, tmp_path)
    here = predictor.predict(inputs)
    _assert_valid_paths(gpt, here)
    for name in ("level_ids", "gpt_id", "depth", "decision"):
        np.testing.assert_array_equal(np.array(fresh["outputs"][name]), here[name])
    plain = Predictor(trained[0], gpt).predict(inputs, thresholds=[0.0] * 7)
    assert not np.array_equal(plain["level_confidences"], here["level_confidences"])
    # fused=False is the network alone, whatever the weights: the published design's decoding.
    network = predictor.predict(inputs, decoding="exact", thresholds=[0.0] * 7, fused=False)
    np.testing.assert_allclose(network["level_confidences"], plain["level_confidences"], rtol=1e-5)
    # Weights on evidence the model lacks cannot be exported.
    (model_dir / CATEGORY_EMBEDDINGS).unlink()
    with pytest.raises(ValueError, match="text_prior"):
        export_inference_model(model_dir, tmp_path / "fused.json")


def test_tune_thresholds_fits_evidence_weights_on_cross_fitted_stores(
        trained: tuple[Path, Path], gpt: Taxonomy, tmp_path: Path) -> None:
    """`linnet tune-thresholds` cross-fits over the stores the model learnt from (here the train split:
    the calibration split is added after training) and bakes temperatures and evidence weights in. The
    category vectors of the labelled nodes are their products' mean text embedding, so the priors are
    informative and must get positive weight at level 1."""
    from linnet_core.calibration.tuning import CALIBRATION_PATHS, CalibrationPaths
    from linnet_core.category_prior import CATEGORY_EMBEDDINGS, CategoryEmbeddings, node_ids
    from linnet_core.model.data import read_split

    model_dir = Path(shutil.copytree(trained[0], tmp_path / "model"))
    data = Path(shutil.copytree(trained[1], tmp_path / "data"))
    write_training_data(tmp_path / "calibration", gpt, sizes={"calibration": 300}, seed=0)
    shutil.copytree(tmp_path / "calibration" / "calibration", data / "calibration")
    pool = read_split(data, "train")
    ids = node_ids(gpt)
    vectors = np.random.default_rng(5).normal(size=(len(ids), 384)).astype(np.float32)
    row = {node_id: i for i, node_id in enumerate(ids)}
    for label in np.unique(pool["gpt_id"]):
        vectors[row[int(label)]] = pool["text_embedding"][pool["gpt_id"] == label].mean(axis=0)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    (model_dir / CATEGORY_EMBEDDINGS).write_bytes(
        CategoryEmbeddings(np.array(ids), vectors, "means/1", gpt.fingerprint).to_bytes())
    export_inference_model(model_dir)
    assert cli.main(["tune-thresholds", "--model", str(model_dir), "--data", str(data), "--folds", "3",
                     "--target-precision", "0.5", "--sensitive", "none"]) == 0
    tuned = load_thresholds(model_dir / "calibration.json")
    assert tuned.weights("text_prior")[0] + tuned.weights("title_prior")[0] > 1.0
    # Level 7 has (almost) no labels: it takes the fit of level 6.
    assert tuned.weights("exemplars")[6] == tuned.weights("exemplars")[5] and tuned.temperatures[6] == \
        tuned.temperatures[5]
    report = json.loads((model_dir / "thresholds_report.json").read_text())
    assert report["evidence_weights"] == {name: list(w) for name, w in tuned.evidence_weights.items()}
    assert report["calibration"] == {"folds": 3, "max_products_per_store": 150, "products": 600, "stores": 7}
    paths = CalibrationPaths.load(model_dir / CALIBRATION_PATHS)
    assert paths.level_ids.shape == (600, 7) and sorted(set(paths.store)) == [f"store-{i}" for i in range(7)]
    np.testing.assert_allclose(Predictor(model_dir, gpt).metadata["text_prior_weights"],
                               tuned.weights("text_prior"), rtol=1e-6)
    # Without folds: the model itself on the calibration split.
    assert cli.main(["tune-thresholds", "--model", str(model_dir), "--data", str(data), "--folds", "0",
                     "--target-precision", "0.5", "--sensitive", "none"]) == 0
    report = json.loads((model_dir / "thresholds_report.json").read_text())
    assert report["calibration"] == {"folds": None, "max_products_per_store": 150, "products": 300,
                                     "stores": 7}


def test_train_publishes_the_model_whole_and_a_failure_keeps_the_old_one(trained, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):
    """Reproduction 7: `train` wrote model.json before the SavedModel export finished, and score and
    run-local take model.json as "model complete"."""
    from linnet_core.model import train as train_module

    model_dir, data = trained
    output = tmp_path / "model"
    shutil.copytree(model_dir, output)
    before = read_model_json(output)["model_version"]
    (tmp_path / "config.json").write_text(json.dumps({**SMALL_CONFIG, "epochs": 1}))
    argv = ["train", "--data", str(data), "--config", str(tmp_path / "config.json"), "--output", str(output)]
    real_export, visible = train_module.export_inference_model, []

    def export_then_die(directory: Path, *args, **kwargs) -> Path:
        visible.append(read_model_json(output)["model_version"])
        real_export(directory, *args, **kwargs)
        raise RuntimeError("killed after the export")

    monkeypatch.setattr(train_module, "export_inference_model", export_then_die)
    assert cli.main(argv) == 1
    assert visible == [before], "while the new model was exported, model.json still named the old one"
    assert read_model_json(output)["model_version"] == before and (output / "saved_model").is_dir()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.json", "model"], "no half-written dir"
    monkeypatch.undo()
    assert cli.main(argv) == 0
    assert read_model_json(output)["model_version"] != before
    assert (output / "saved_model" / "saved_model.pb").exists()
