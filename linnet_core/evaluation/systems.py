"""What a categorization system produced for a set of products, and how it is read and joined.

Predictions (the categorized table) and labels (the products table) are joined by `product_id`;
products without a label row stay in as unlabelled (they count in coverage only).
"""

from __future__ import annotations

import glob
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from linnet_core.features import LEVELS, NO_LABEL
from linnet_core.publish import MANIFEST

PREDICTION_COLUMNS = ("product_id", "gpt_id", "level_ids", "level_confidences")
LINEAGE_COLUMNS = ("model_version", "taxonomy_version", "thresholds_version")
LABEL_COLUMNS = ("product_id", "gpt_id", "lang", "store")


class EvaluationError(ValueError):
    """Inputs that cannot be evaluated together (missing columns, duplicate or unmatched ids)."""


@dataclass
class SystemOutput:
    """One system's outputs on N products, aligned with a product id array.

    `gpt_id` is the final prediction (-1 = abstained); `level_ids` / `level_confidences` [N, 7] the
    decoded path before thresholds and the confidence the system thresholds (a flat classifier has
    a one-node "path": its predicted node, placed at that node's depth).
    """

    name: str
    product_ids: np.ndarray
    gpt_id: np.ndarray
    level_ids: np.ndarray
    level_confidences: np.ndarray
    versions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.product_ids)
        if self.gpt_id.shape != (n,) or self.level_ids.shape != (n, LEVELS) or \
                self.level_confidences.shape != (n, LEVELS):
            raise EvaluationError(f"{self.name}: arrays disagree: {n} ids, gpt_id {self.gpt_id.shape}, "
                                  f"level_ids {self.level_ids.shape}, "
                                  f"confidences {self.level_confidences.shape}")

    def take(self, index: np.ndarray) -> SystemOutput:
        """The same system restricted to (and reordered by) `index`."""
        return SystemOutput(self.name, self.product_ids[index], self.gpt_id[index], self.level_ids[index],
                            self.level_confidences[index], dict(self.versions))


@dataclass
class Labels:
    """Labels of products: gpt_id (-1 = unlabelled), language and store, aligned with product_ids."""

    product_ids: np.ndarray
    gpt_id: np.ndarray
    lang: np.ndarray
    store: np.ndarray

    def take(self, index: np.ndarray) -> Labels:
        return Labels(self.product_ids[index], self.gpt_id[index], self.lang[index], self.store[index])


def parquet_files(pattern: str) -> list[str]:
    """Parquet files of a glob, or of a directory tree such as a scoring output.

    Below a directory, `dead_letters` and `_`/`.`-prefixed (staging, trash, hidden) folders and files
    are skipped. A tree holding partition manifests (`_SUCCESS`, written last by every commit) is read
    through them: only the files they name, so a partition whose commit is under way or never happened
    is read whole or not at all; a tree without any (a hand-made table) gives all its Parquet files.
    """
    if Path(pattern).is_dir():
        root = Path(pattern)

        def kept(path: Path) -> bool:
            parts = path.relative_to(root).parts
            return not any(part == "dead_letters" or part[:1] in "._" for part in parts)

        manifests = [path for path in root.rglob(MANIFEST) if kept(path.parent)]
        if manifests:
            files = sorted(str(path.parent / name) for path in manifests
                           for name in json.loads(path.read_text(encoding="utf-8"))["files"])
        else:
            files = sorted(str(path) for path in root.rglob("*.parquet") if kept(path))
    else:
        files = sorted(glob.glob(pattern, recursive=True))
    if not files:
        raise EvaluationError(f"no Parquet files in {pattern!r}")
    return files


def _read(pattern: str, columns: Sequence[str], required: Sequence[str]) -> pa.Table:
    tables = []
    for path in parquet_files(pattern):
        names = pq.read_schema(path).names
        missing = [c for c in required if c not in names]
        if missing:
            raise EvaluationError(f"{path}: missing columns {missing}")
        tables.append(pq.read_table(path, columns=[c for c in columns if c in names]))
    return pa.concat_tables(tables, promote_options="default")


def _int_ids(column: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(column.fill_null(NO_LABEL).to_numpy(zero_copy_only=False), dtype=np.int64)


def _padded(column: pa.ChunkedArray, fill: float, dtype) -> np.ndarray:
    rows = column.to_pylist()
    result = np.full((len(rows), LEVELS), fill, dtype=dtype)
    for i, row in enumerate(rows):
        values = [fill if v is None else v for v in (row or [])][:LEVELS]
        result[i, : len(values)] = values
    return result


def _unique(product_ids: np.ndarray, what: str) -> None:
    values, counts = np.unique(product_ids, return_counts=True)
    if (counts > 1).any():
        raise EvaluationError(f"{what}: {int((counts > 1).sum())} duplicate product ids, e.g. "
                              f"{values[counts > 1][0]!r}")


def read_predictions(pattern: str, name: str = "ours") -> SystemOutput:
    """A categorized table (schemas/categorized.json) as a SystemOutput; lineage columns → versions.

    Raises:
        EvaluationError: missing columns, duplicate product ids, or mixed model/thresholds versions.
    """
    table = _read(pattern, PREDICTION_COLUMNS + LINEAGE_COLUMNS, PREDICTION_COLUMNS)
    product_ids = np.asarray(table["product_id"].to_pylist(), dtype=object)
    _unique(product_ids, pattern)
    versions = {}
    for column in LINEAGE_COLUMNS:
        if column in table.column_names:
            seen = sorted({str(v) for v in table[column].to_pylist()})
            if len(seen) > 1:
                raise EvaluationError(f"{pattern}: predictions mix {column}s {seen}; evaluate one at a time")
            versions[column] = seen[0] if seen else "unknown"
    return SystemOutput(name, product_ids, _int_ids(table["gpt_id"]),
                        _padded(table["level_ids"], NO_LABEL, np.int64),
                        _padded(table["level_confidences"], 0.0, np.float64), versions)


def read_labels(pattern: str) -> Labels:
    """Labels from a products table (schemas/products.json); null gpt_id = unlabelled."""
    table = _read(pattern, LABEL_COLUMNS, ("product_id", "gpt_id"))
    product_ids = np.asarray(table["product_id"].to_pylist(), dtype=object)
    _unique(product_ids, pattern)

    def text(column: str) -> np.ndarray:
        values = table[column].to_pylist() if column in table.column_names else [None] * len(product_ids)
        return np.asarray(["unknown" if v is None else str(v) for v in values], dtype=object)

    return Labels(product_ids, _int_ids(table["gpt_id"]), text("lang"), text("store"))


def join(system: SystemOutput, labels: Labels) -> Labels:
    """Labels aligned with the system's products; a product without a label row is unlabelled."""
    position = {pid: i for i, pid in enumerate(labels.product_ids)}
    index = np.array([position.get(pid, -1) for pid in system.product_ids], dtype=np.int64)
    found = index >= 0
    unknown = np.full(len(index), "unknown", dtype=object)
    aligned = Labels(system.product_ids.copy(), np.full(len(index), NO_LABEL, np.int64), unknown,
                     unknown.copy())
    aligned.gpt_id[found] = labels.gpt_id[index[found]]
    aligned.lang[found] = labels.lang[index[found]]
    aligned.store[found] = labels.store[index[found]]
    return aligned


def align(system: SystemOutput, product_ids: np.ndarray) -> SystemOutput:
    """The system's rows in the order of `product_ids`. Raises EvaluationError if any is missing."""
    position = {pid: i for i, pid in enumerate(system.product_ids)}
    missing = [pid for pid in product_ids if pid not in position]
    if missing:
        raise EvaluationError(f"{system.name}: no output for {len(missing)} evaluated products, "
                              f"e.g. {missing[0]!r}")
    return system.take(np.array([position[pid] for pid in product_ids], dtype=np.int64))
