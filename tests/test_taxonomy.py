"""Taxonomy facts against the real GPT file, and every validation error on crafted files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from linnet_core.taxonomy import Taxonomy, TaxonomyError
from pipelines import cli, defaults


def test_real_taxonomy_facts(gpt: Taxonomy) -> None:
    assert gpt.version == "2021-09-21"
    assert len(gpt) == 5595
    assert gpt.level_sizes() == [21, 192, 1349, 2203, 1385, 397, 48]
    assert len(gpt.leaves) == 4719
    assert gpt.max_depth == 7


def test_dog_beds(gpt: Taxonomy) -> None:
    node = gpt.by_path("Animals & Pet Supplies > Pet Supplies > Dog Supplies > Dog Beds")
    assert node.id == 4434
    assert node.depth == 4
    assert [a.id for a in gpt.ancestors(node.id)] == [1, 2, 5]
    assert node.is_leaf


def test_level_index_is_stable_and_invertible(gpt: Taxonomy) -> None:
    for level in range(1, 8):
        ids = gpt.level_ids(level)
        assert ids == sorted(ids)
        for index in (0, len(ids) // 2, len(ids) - 1):
            assert gpt.level_index(ids[index]) == index
            assert gpt.node_at(level, index).id == ids[index]
    assert gpt.level_labels(4434) == [gpt.level_index(1), gpt.level_index(2), gpt.level_index(5),
                                      gpt.level_index(4434), -1, -1, -1]


def test_localized_names_fall_back_to_english(gpt: Taxonomy) -> None:
    german = Taxonomy.load(defaults.TAXONOMY, defaults.locale_file(defaults.TAXONOMY, "de-DE"))
    assert german.name(4434) == "Hundebetten"
    assert german.locale == "de-DE"
    newest = max(node.id for node in gpt)  # ids added after the 2015 locale files keep en-US names
    assert german.name(newest) == gpt.node(newest).name


def test_resolve_checks_path(tiny: Taxonomy) -> None:
    assert tiny.resolve("3", "Animals > Pets > Dogs").id == 3
    with pytest.raises(TaxonomyError, match="does not match id 3"):
        tiny.resolve(3, "Animals > Pets > Cats")
    with pytest.raises(TaxonomyError, match="unknown category id 99"):
        tiny.resolve(99)
    with pytest.raises(TaxonomyError, match="unknown category path"):
        tiny.by_path("Animals > Fish")


@pytest.mark.parametrize(("text", "message"), [
    ("1 - A\nnot a line\n", r":3: cannot parse line 'not a line'"),
    ("1 - A\n1 - B\n", "duplicate id 1"),
    ("1 - A\n2 - A\n", "duplicate path 'A'"),
    ("1 - A\n2 - B > C\n", "orphan node 2 'B > C'"),
    ("1 - A\n2 - A >  > C\n", "empty category name"),
])
def test_validation_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "taxonomy-with-ids.en-US.txt"
    path.write_text("# Google_Product_Taxonomy_Version: t\n" + text, encoding="utf-8")
    with pytest.raises(TaxonomyError, match=message) as caught:
        Taxonomy.load(path)
    assert str(path) in str(caught.value)


def test_fingerprint_tracks_structure(tiny_taxonomy_file: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved.txt"
    moved.write_text(tiny_taxonomy_file.read_text().replace("4 - Animals > Pets > Cats",
                                                            "4 - Animals > Farm > Cats"))
    assert Taxonomy.load(tiny_taxonomy_file).fingerprint != Taxonomy.load(moved).fingerprint


@pytest.mark.shared_data
def test_cli_summary_and_node(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["taxonomy", "--taxonomy", defaults.TAXONOMY]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["nodes"], summary["leaves"], summary["max_depth"]) == (5595, 4719, 7)
    assert summary["per_level"] == [21, 192, 1349, 2203, 1385, 397, 48]
    assert cli.main(["taxonomy", "--taxonomy", defaults.TAXONOMY, "--locale", "fr-FR", "--node", "4434"]) == 0
    node = json.loads(capsys.readouterr().out)
    assert node["depth"] == 4
    assert [a["id"] for a in node["ancestors"]] == [1, 2, 5]
    assert node["path"].endswith("Dog Beds")
    assert cli.main(["taxonomy", "--node", "12345678"]) == 1
    assert "unknown category id" in capsys.readouterr().err
