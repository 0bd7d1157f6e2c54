"""Training-data logic without Beam or TensorFlow: store-hash splits, label validation, per-level
class indexes, the class-weight formula and the statistics written to `stats.json`.

The pipeline (`pipelines/build_training_data.py`) and tf.Transform (`linnet_core/transform.py`) call
these functions, so a split or a weight is computed by one piece of code wherever it is needed.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import schemas
from linnet_core.features import (
    IMAGE_DIM,
    IMAGE_EMBEDDING,
    IMAGE_PRESENT,
    LEVELS,
    NO_LABEL,
    TEXT_DIM,
    TEXT_EMBEDDING,
    TITLE_EMBEDDING,
    label_feature,
)
from linnet_core.records import Reason, RecordError
from linnet_core.taxonomy import Node, Taxonomy, TaxonomyError

TRAIN, VALIDATION, CALIBRATION = "train", "validation", "calibration"
SPLITS = (TRAIN, VALIDATION, CALIBRATION)
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)
CLASS_WEIGHTS = "class_weights.json"
# {"text": encoder_id, "image": encoder_id}: the encoders the data's embeddings come from; the model
# directory keeps a copy, and its version hashes it (scoring must embed with the same encoders)
ENCODERS_JSON = "encoders.json"
DEFAULT_SPLIT_BY = ("store",)
LAST_RESORT_SPLIT_FIELD = "product_id"
UNKNOWN_LANG = "und"


class TrainingDataError(ValueError):
    """A training-data setting or record that cannot be used, with the offending value."""


@dataclass(frozen=True)
class SplitConfig:
    """How records are assigned to train / validation / calibration.

    A record is hashed by the first non-empty field of `split_by` (`product_id` as the last resort,
    so every record has a key). Splitting by `store` keeps one store's near-duplicate products in
    one split; `split_by=("product_id",)` is the per-record fallback.

    Raises:
        TrainingDataError: not one fraction per split, a negative fraction, fractions not summing
            to 1, or an empty field list or a field that is not in the products schema.
    """

    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    split_by: tuple[str, ...] = DEFAULT_SPLIT_BY

    def __post_init__(self) -> None:
        if len(self.fractions) != len(SPLITS):
            raise TrainingDataError(f"need {len(SPLITS)} split fractions {SPLITS}, got {self.fractions}")
        if any(f < 0 for f in self.fractions) or abs(sum(self.fractions) - 1.0) > 1e-6:
            raise TrainingDataError(f"split fractions must be >= 0 and sum to 1, got {self.fractions}")
        if not self.split_by or not all(self.split_by):
            raise TrainingDataError(f"split_by needs at least one field name, got {self.split_by}")
        unknown = set(self.split_by) - set(schemas.field_names("products"))
        if unknown:
            # A misspelt field would silently split every record by product_id.
            raise TrainingDataError(f"split_by fields {sorted(unknown)} are not product fields")


def hash_unit(key: str) -> float:
    """A uniform number in [0, 1) from a string: stable across processes, machines and Python
    versions (unlike `hash()`), so re-runs assign the same split."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


DEFAULT_FOLDS = 5  # store folds of cross-fitted calibration (and of checking targets on unseen stores)


def store_folds(stores: Sequence[str], folds: int) -> np.ndarray:
    """int[N]: each row's fold in 0..folds-1 by a hash of its store, so a store is never split; salted,
    so that folds cut across the train / validation / calibration split."""
    return np.array([int(hash_unit(f"crossfit:{store}") * folds) for store in stores], np.int64)


def split_key(record: Mapping[str, Any], split_by: Sequence[str]) -> str:
    """The value a record is split by: its first non-empty `split_by` field, else its product_id."""
    for name in (*split_by, LAST_RESORT_SPLIT_FIELD):
        value = record.get(name)
        if value not in (None, ""):
            return str(value)
    raise TrainingDataError(f"record has none of the split fields {(*split_by, LAST_RESORT_SPLIT_FIELD)}")


def assign_split(record: Mapping[str, Any], config: SplitConfig) -> str:
    """The split (`train`, `validation` or `calibration`) of a record, by hash of its split key."""
    unit = hash_unit(split_key(record, config.split_by))
    bound = 0.0
    for name, fraction in zip(SPLITS, config.fractions, strict=True):
        bound += fraction
        if unit < bound:
            return name
    return next(name for name, fraction in zip(SPLITS[::-1], config.fractions[::-1], strict=True)
                if fraction > 0)


def resolve_label(record: Mapping[str, Any], taxonomy: Taxonomy) -> Node:
    """The taxonomy node a labelled product record names.

    The id is authoritative; a path given beside it must name the same node. A record with only a
    path is resolved by path.

    Raises:
        RecordError: `UNKNOWN_LABEL` for no label, an id not in the taxonomy or an unknown path;
            `LABEL_PATH_MISMATCH` for a known id whose given path names another node.
    """
    gpt_id, gpt_path = record.get("gpt_id"), record.get("gpt_path")
    try:
        if gpt_id is None:
            if not gpt_path:
                raise RecordError(Reason.UNKNOWN_LABEL, "record has no label (neither gpt_id nor gpt_path)")
            return taxonomy.by_path(gpt_path)
        taxonomy.node(gpt_id)
    except TaxonomyError as error:
        raise RecordError(Reason.UNKNOWN_LABEL, str(error)) from None
    try:
        return taxonomy.resolve(gpt_id, gpt_path)
    except TaxonomyError as error:
        raise RecordError(Reason.LABEL_PATH_MISMATCH, str(error)) from None


def level_labels(node_id: int, taxonomy: Taxonomy) -> list[int]:
    """Class index of the node's ancestor at each level 1..LEVELS, `NO_LABEL` below its depth.

    Raises:
        TrainingDataError: the taxonomy is deeper than the model's `LEVELS` heads.
    """
    if taxonomy.max_depth > LEVELS:
        raise TrainingDataError(f"taxonomy depth {taxonomy.max_depth} exceeds the model's {LEVELS} levels")
    labels = taxonomy.level_labels(node_id, missing=NO_LABEL)
    return labels + [NO_LABEL] * (LEVELS - len(labels))


def level_sizes(taxonomy: Taxonomy) -> list[int]:
    """Classes per level 1..LEVELS (0 for levels a shallow taxonomy lacks)."""
    sizes = taxonomy.level_sizes()
    return sizes + [0] * (LEVELS - len(sizes))


def _vector(value: Any, dim: int, name: str, product_id: str) -> np.ndarray:
    vector = np.asarray(value, dtype=np.float32).reshape(-1)
    if vector.shape != (dim,) or not np.all(np.isfinite(vector)):
        raise RecordError(Reason.EMBEDDING_FAILED,
                          f"product {product_id}: {name} has shape {vector.shape} or non-finite values, "
                          f"expected {dim} finite floats")
    return vector


def to_example(embedded: Mapping[str, Any], taxonomy: Taxonomy) -> dict[str, Any]:
    """The raw training features (`schemas/training_features.json`) of one embedded, labelled record.

    Raises:
        RecordError: label reasons as in `resolve_label`; `EMBEDDING_FAILED` for a missing,
            wrongly shaped or non-finite embedding.
    """
    node = resolve_label(embedded, taxonomy)
    product_id = str(embedded["product_id"])
    example = {
        "product_id": product_id,
        "store": embedded.get("store") or "",
        "lang": embedded.get("lang") or UNKNOWN_LANG,
        TEXT_EMBEDDING: _vector(embedded.get(TEXT_EMBEDDING), TEXT_DIM, TEXT_EMBEDDING, product_id),
        TITLE_EMBEDDING: _vector(embedded.get(TITLE_EMBEDDING), TEXT_DIM, TITLE_EMBEDDING, product_id),
        IMAGE_EMBEDDING: _vector(embedded.get(IMAGE_EMBEDDING), IMAGE_DIM, IMAGE_EMBEDDING, product_id),
        IMAGE_PRESENT: float(embedded.get(IMAGE_PRESENT) or 0.0),
        "gpt_id": node.id,
    }
    for level, label in enumerate(level_labels(node.id, taxonomy), start=1):
        example[label_feature(level)] = label
    return example


DEFAULT_STORE_CAP = 150.0


@dataclass(frozen=True)
class WeightConfig:
    """Parameters of the example-weight formulas (see `class_weights` and `store_factors`).

    `store_cap` None turns the store factor off (every factor 1).

    Raises:
        TrainingDataError: power < 0, smoothing <= 0, cap <= 0 or store_cap <= 0.
    """

    power: float = 0.5
    smoothing: float = 1.0
    cap: float = 10.0
    store_cap: float | None = DEFAULT_STORE_CAP

    def __post_init__(self) -> None:
        if self.power < 0 or self.smoothing <= 0 or self.cap <= 0:
            raise TrainingDataError(f"class weights need power >= 0, smoothing > 0, cap > 0; got {self}")
        if self.store_cap is not None and not self.store_cap > 0:
            raise TrainingDataError(f"store_cap must be > 0 (or None to disable), got {self.store_cap}")


def parse_store_cap(text: str | float | None) -> float | None:
    """The `--store_cap` flag: a positive number, or 0 / "none" for no store factor.

    Raises:
        TrainingDataError: not a number, or negative.
    """
    if text is None or str(text).strip().lower() in ("", "none", "0", "0.0"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise TrainingDataError(f"--store_cap must be a number or 'none', got {text!r}") from None
    if value < 0:
        raise TrainingDataError(f"--store_cap must be >= 0 (0 or 'none' disables it), got {text!r}")
    return value or None


def store_factors(store_counts: Any, store_cap: float | None, xp: Any = np) -> Any:
    """Per-example factor that caps each store's total weight, from its store's train-split count:

        f = min(1, store_cap / n_store)

    Stores are very unequal (one has a third of the train split, mostly one category), and the
    model is judged on unseen stores, so a store beyond `store_cap` examples counts as `store_cap`
    examples in the loss: its examples share that total. n_store = 0 (a store the train split lacks:
    validation and calibration stores) gives 1, as does `store_cap` None (factor off).

    Args:
        store_counts: the train-split example count of each example's store.
        xp: numpy, or `tensorflow.experimental.numpy` inside the tf.Transform graph (one formula).
    """
    counts = xp.asarray(store_counts, dtype=xp.float64)
    if store_cap is None:
        return xp.ones_like(counts)
    return xp.where(counts > store_cap, store_cap / xp.maximum(counts, 1.0), 1.0)


def class_weights(counts: Any, config: WeightConfig, xp: Any = np) -> Any:
    """Per-class loss weights of one taxonomy level from the training split's class counts.

        w_c = min(cap, (N / (K_seen · (n_c + smoothing))) ^ power)

    with n_c the training examples of class c, N = Σ n_c the examples labelled at this level and
    K_seen the classes with n_c > 0. With power 1 and no smoothing this is the "balanced" weight
    (the example-weighted mean weight is 1, every seen class carries the same total weight); the
    default power 0.5 halves that correction in log space because labels are noisy and a few stores
    dominate; smoothing keeps a class with one example from outweighing all others; the cap bounds
    what unseen classes (n_c = 0) and singletons get. A level without training labels gets weight 0.

    Args:
        counts: class counts in the level's class-index order.
        xp: the array namespace: numpy here, `tensorflow.experimental.numpy` inside the tf.Transform
            graph, so the weights written to TFRecords and to class_weights.json are one formula.

    Returns:
        float64 weights, one per class.
    """
    counts = xp.asarray(counts, dtype=xp.float64)
    total = xp.sum(counts)
    seen = xp.maximum(xp.sum(xp.where(counts > 0, 1.0, 0.0)), 1.0)
    return xp.minimum(xp.power(total / (seen * (counts + config.smoothing)), config.power), config.cap)


@dataclass
class SplitStats:
    """Counts of one split, merged across workers: examples, stores, per-level class counts,
    languages and images. `as_dict` gives the split's part of `stats.json`."""

    examples: int = 0
    images: int = 0
    stores: set[str] = field(default_factory=set)
    languages: Counter = field(default_factory=Counter)
    class_counts: list[Counter] = field(default_factory=lambda: [Counter() for _ in range(LEVELS)])

    def add(self, example: Mapping[str, Any]) -> SplitStats:
        """Count one raw example (a `to_example` dict)."""
        self.examples += 1
        self.images += int(example[IMAGE_PRESENT] > 0)
        self.stores.add(example["store"])
        self.languages[example["lang"]] += 1
        for level in range(1, LEVELS + 1):
            label = example[label_feature(level)]
            if label != NO_LABEL:
                self.class_counts[level - 1][label] += 1
        return self

    def merge(self, other: SplitStats) -> SplitStats:
        """Add another accumulator's counts into this one."""
        self.examples += other.examples
        self.images += other.images
        self.stores |= other.stores
        self.languages.update(other.languages)
        for mine, theirs in zip(self.class_counts, other.class_counts, strict=True):
            mine.update(theirs)
        return self

    def count_vector(self, level: int, size: int) -> np.ndarray:
        """Class counts of `level` as a dense vector in class-index order."""
        vector = np.zeros(size, dtype=np.int64)
        for index, count in self.class_counts[level - 1].items():
            vector[index] = count
        return vector

    def as_dict(self) -> dict[str, Any]:
        """Examples, stores, per-level label coverage and classes seen, languages, image share."""
        return {
            "examples": self.examples,
            "stores": len(self.stores),
            "label_coverage": [self._share(sum(c.values())) for c in self.class_counts],
            "classes_seen": [len(c) for c in self.class_counts],
            "languages": dict(self.languages.most_common()),
            "image_share": self._share(self.images),
        }

    def _share(self, count: int) -> float:
        return round(count / self.examples, 6) if self.examples else 0.0


def class_weights_report(train: SplitStats, taxonomy: Taxonomy, config: WeightConfig) -> dict[str, Any]:
    """`class_weights.json`: the formula, its parameters, and per level the weight of every class
    seen in training (id, path, class index, count) plus the weight an unseen class gets."""
    sizes = level_sizes(taxonomy)
    levels = []
    for level in range(1, LEVELS + 1):
        counts = train.count_vector(level, sizes[level - 1])
        weights = class_weights(counts, config)
        seen = np.flatnonzero(counts)
        levels.append({
            "level": level,
            "classes": sizes[level - 1],
            "classes_seen": len(seen),
            "labelled_examples": int(counts.sum()),
            "unseen_weight": float(class_weights(np.append(counts, 0), config)[-1]) if len(seen) else 0.0,
            "weights": [
                {"id": (node := taxonomy.node_at(level, int(i))).id, "path": node.full_path, "index": int(i),
                 "count": int(counts[i]), "weight": round(float(weights[i]), 6)}
                for i in seen
            ],
        })
    return {
        "formula": "w_c = min(cap, (N / (K_seen * (n_c + smoothing))) ** power), over the train split",
        "power": config.power,
        "smoothing": config.smoothing,
        "cap": config.cap,
        "example_weight": "weight_level_k = w_c(label_k) * min(1, store_cap / n_store), n_store = the "
                          "store's train-split examples (0 for other stores: factor 1); store_cap null = "
                          "factor 1",
        "store_cap": config.store_cap,
        "taxonomy_version": taxonomy.version,
        "taxonomy_fingerprint": taxonomy.fingerprint,
        "levels": levels,
    }


def stats_report(split_stats: Mapping[str, SplitStats], dead_letters_by_reason: Mapping[str, int],
                 inputs: int, written: Mapping[str, int], split: SplitConfig,
                 taxonomy: Taxonomy) -> dict[str, Any]:
    """`stats.json`: inputs, examples and TFRecords written per split, per-level label coverage and
    classes seen, languages, image share, dead letters by reason, and how the split was made."""
    overall = SplitStats()
    for stats in split_stats.values():
        overall.merge(stats)
    splits = {}
    for name in SPLITS:
        splits[name] = (split_stats.get(name) or SplitStats()).as_dict()
        splits[name]["written"] = int(written.get(name, 0))
    return {
        "inputs": inputs,
        "examples": overall.examples,
        "dead_letters": sum(dead_letters_by_reason.values()),
        "dead_letters_by_reason": dict(Counter(dead_letters_by_reason).most_common()),
        "overall": overall.as_dict(),
        "splits": splits,
        "split": {"by": [*split.split_by, LAST_RESORT_SPLIT_FIELD], "fractions": list(split.fractions)},
        "taxonomy": {"version": taxonomy.version, "fingerprint": taxonomy.fingerprint},
    }


def choose_duplicate(records: Iterable[Mapping[str, Any]]) -> tuple[Mapping, list[Mapping]]:
    """Of records sharing a product_id, (the one kept, the rest): the latest `updated_at` wins, ties
    broken by content so every run keeps the same one."""
    ordered = sorted(records, key=_recency_key, reverse=True)
    return ordered[0], ordered[1:]


def _recency_key(record: Mapping[str, Any]) -> tuple[str, str]:
    updated = record.get("updated_at")
    return (updated.isoformat() if updated is not None else "",
            json.dumps(record, sort_keys=True, default=str, ensure_ascii=False))
