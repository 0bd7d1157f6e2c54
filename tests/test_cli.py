"""Misuse of `linnet`: one clear line on stderr, exit 2 for usage and 1 for other errors, flags in
`--help`, and nothing written by a run that cannot start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines import cli, import_products

ROOT = Path(__file__).parents[1]


def linnet(*argv: str) -> subprocess.CompletedProcess:
    """`linnet ARGV` in a fresh process running this checkout's code."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *argv], capture_output=True, text=True,
                          env=env, timeout=300, check=False)


def one_line(capsys: pytest.CaptureFixture) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture
def products(tmp_path: Path) -> Path:
    path = tmp_path / "products.jsonl"
    path.write_text(json.dumps({"product_id": "p1", "title": "Dog bed"}) + "\n", encoding="utf-8")
    return path


@pytest.mark.subprocesses
def test_a_misspelled_flag_fails_with_the_closest_one_and_writes_nothing(tmp_path: Path, products: Path):
    """Reproduction 4: `--partiton` was dropped with a warning, and today's partition replaced."""
    done = linnet("score", "--input", str(products), "--output", str(tmp_path / "out"),
                  "--partiton", "2025-01-01")
    assert done.returncode == 2
    assert done.stderr.strip() == "linnet score: unknown flag --partiton (did you mean --partition?)"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("argv", "expected"), [
    (["import-products", "--inputt", "x"],
     "linnet import-products: unknown flag --inputt (did you mean --input?)"),
    (["score", "--modle=m"], "linnet score: unknown flag --modle (did you mean --model?)"),
    (["train", "--dat", "d", "--output", "o"], "linnet train: unknown flag --dat (did you mean --data?)"),
    (["run-local", "--sampel", "5"], "linnet run-local: unknown flag --sampel (did you mean --sample?)"),
    (["build-training-data", "--output", "o", "--split-fraction", "1"],
     "linnet build-training-data: unknown flag --split-fraction (did you mean --split-fractions?)"),
])
def test_unknown_flags_exit_2_naming_the_closest_flag(argv: list[str], expected: str,
                                                     capsys: pytest.CaptureFixture):
    assert cli.main(argv) == 2
    assert one_line(capsys) == expected


def test_missing_required_flag_is_a_usage_error(products: Path, capsys: pytest.CaptureFixture):
    assert cli.main(["import-products", "--input", str(products)]) == 2
    assert one_line(capsys) == "linnet import-products: missing required flag(s): --output"


@pytest.mark.shared_data  # import-products loads the shared taxonomy before it reads the input
@pytest.mark.parametrize("case", ["missing", "directory"])
def test_bad_input_is_one_line(case: str, tmp_path: Path, capsys: pytest.CaptureFixture):
    given = tmp_path / "nowhere.jsonl" if case == "missing" else tmp_path
    assert cli.main(["import-products", "--input", str(given), "--output", str(tmp_path / "out")]) == 1
    line = one_line(capsys)
    assert line.startswith(f"linnet import-products: --input {given} ")
    assert ("is a directory" if case == "directory" else "matches no file") in line


def test_missing_model_is_one_line(tmp_path: Path, products: Path, capsys: pytest.CaptureFixture):
    argv = ["score", "--input", str(products), "--output", str(tmp_path), "--model", str(tmp_path / "m")]
    assert cli.main(argv) == 1
    assert f"--model {tmp_path / 'm'} is not a model directory" in one_line(capsys)


def test_taxonomy_that_is_not_utf8_is_one_line(tmp_path: Path, products: Path, capsys: pytest.CaptureFixture):
    taxonomy = tmp_path / "taxonomy.txt"
    taxonomy.write_bytes(b"# Google_Product_Taxonomy_Version: x\n1 - Animals\n2 - Animals > Caf\xe9\n")
    argv = ["import-products", "--input", str(products), "--output", str(tmp_path / "out"),
            "--taxonomy", str(taxonomy)]
    assert cli.main(argv) == 1
    assert f"{taxonomy}:3: not UTF-8 text (byte 0xe9)" in one_line(capsys)


def test_impossible_partition_date_is_an_error_not_a_run_id(products: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture):
    """Reproduction 9: `Partition.parse('2025-02-30')` gave a run partition."""
    argv = ["score", "--input", str(products), "--output", str(tmp_path), "--partition", "2025-02-30"]
    assert cli.main(argv) == 1
    assert "bad partition date '2025-02-30'" in one_line(capsys)


@pytest.mark.subprocesses
def test_verbose_shows_the_traceback(tmp_path: Path):
    done = linnet("import-products", "--input", str(tmp_path / "nowhere.jsonl"), "--output", str(tmp_path),
                  "--verbose")
    assert done.returncode == 1 and "Traceback" in done.stderr and "FileNotFoundError" in done.stderr
    quiet = linnet("import-products", "--input", str(tmp_path / "nowhere.jsonl"), "--output", str(tmp_path))
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr
    assert len(quiet.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("command", "flags"), [
    ("score", ["--input", "--model", "--output", "--partition", "--calibration", "--embedding_cache"]),
    ("import-products", ["--input", "--output", "--image_root", "--taxonomy", "--run_id"]),
    ("build-training-data", ["--input", "--output", "--split_fractions", "--store_cap"]),
])
def test_help_lists_the_flags(command: str, flags: list[str], capsys: pytest.CaptureFixture):
    """Reproduction 9: `linnet score --help` and `linnet import-products --help` listed no flags."""
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: linnet {command}")
    for flag in flags:
        assert flag in out


@pytest.mark.shared_data
def test_a_failed_import_keeps_the_previous_output(tmp_path: Path, products: Path,
                                                  capsys: pytest.CaptureFixture):
    """Reproduction 5: an import with a missing input deleted the previous products and dead letters
    and left the old summary.json, which run-local takes as "import done"."""
    output = tmp_path / "out"
    first = import_products.run(["--input", str(products), "--output", str(output)])
    before = {path.relative_to(output): path.read_bytes() for path in output.rglob("*") if path.is_file()}
    missing = tmp_path / "missing.jsonl"
    assert cli.main(["import-products", "--input", str(missing), "--output", str(output)]) == 1
    after = {path.relative_to(output): path.read_bytes() for path in output.rglob("*") if path.is_file()}
    assert after == before
    assert json.loads((output / "summary.json").read_text())["run_id"] == first["run_id"]
    assert pq.read_table(output / "products").column("product_id").to_pylist() == ["p1"]


def test_renamed_flags_keep_their_old_names(capsys: pytest.CaptureFixture):
    """`score --thresholds` (now --calibration) still sets the new flag, hidden from --help, with a note."""
    from pipelines import usage
    from pipelines.options import pipeline_options
    from pipelines.score import ScoreOptions

    usage._note_renamed.cache_clear()
    options = pipeline_options(["--thresholds", "tuned.json"], "linnet score", ScoreOptions)
    assert options.view_as(ScoreOptions).calibration == "tuned.json"
    assert capsys.readouterr().err.count("--thresholds is deprecated, use --calibration") == 1
    with pytest.raises(SystemExit):
        cli.main(["score", "--help"])
    assert "--thresholds" not in capsys.readouterr().out
