"""The systems compared with ours, each scored on the same products.

(a) `TfidfBaseline`: a flat TF-IDF (word and character n-grams) + LinearSVC classifier over the label
    nodes seen in training (the 2018-era approach, baseline A of `baseline_models`), on
    `features.product_text`. Its path is the predicted node's
    ancestors; a node's confidence is the probability mass of the classes under it.
(b) `published_design`: the multi-task network's own softmax heads (no calibration, no evidence),
    greedy decoding and per-level thresholds, no back-off (a path that does not clear every threshold
    gets no answer). Decoding runs in the exported model.
(c) ours: the network's logits fused with the taxonomy priors and the exemplar memory, calibrated,
    exact decoding, precision-target thresholds and back-off: the model's defaults.
An ablation beside them, (b) on ours' scores: the published decision (greedy, one threshold, no
back-off) over ours' fused, calibrated scores, which isolates what decoding and back-off add.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

import numpy as np

from linnet_core import metrics, records
from linnet_core.decisions import LEAF
from linnet_core.evaluation import baseline_models
from linnet_core.evaluation.systems import SystemOutput, parquet_files
from linnet_core.features import NO_LABEL, product_text
from linnet_core.metrics import AncestorTable

TFIDF, PUBLISHED, OURS = "tfidf", "published", "ours"
PUBLISHED_ON_OURS = "published_on_ours"  # the ablation: (b)'s decision over ours' scores
OURS_UNIFORM = "ours_uniform"  # ours with one hand-set threshold for every level: a curve, not a system
TITLES = {TFIDF: "(a) TF-IDF word+char + LinearSVC, flat", PUBLISHED: "(b) greedy + per-level thresholds",
          PUBLISHED_ON_OURS: "ablation: (b)'s decision on ours' scores",
          OURS: "(c) evidence + calibrated + exact + back-off",
          OURS_UNIFORM: "(c) with one threshold for all levels"}
DESCRIPTIONS = {
    TFIDF: "TF-IDF (word 1–2-grams and char_wb 3–5-grams) + one-vs-rest LinearSVC over the label nodes the "
           "model learnt from, softmax with a store-grouped temperature; always answers its most probable "
           "node; confidence = probability mass under a node.",
    PUBLISHED: "the published design: the multi-task network's own softmax heads, greedy decoding, one "
               "threshold for every level (the uniform threshold with the best hF1 on the calibration "
               "split) plus the sensitive floors; a path that does not clear every threshold down to its "
               "leaf gets no answer.",
    PUBLISHED_ON_OURS: "not a baseline but an ablation: (b)'s decision (greedy, one threshold chosen the "
                       "same way, no back-off) over ours' fused and calibrated scores, so the gap to (c) "
                       "is what exact decoding, calibrated thresholds and back-off add.",
    OURS: "the model's defaults: the network's logits fused with the taxonomy priors of both texts and "
          "the exemplar memory (temperatures and weights fit on cross-fitted unseen stores), exact path "
          "decoding, Clopper–Pearson precision-target thresholds from `linnet tune-thresholds`, back-off "
          "to the deepest confident ancestor; its operating curve retunes the thresholds for each "
          "precision target on the same calibration set.",
}


def product_texts(source: str, product_ids: Iterable[str] | None = None) -> dict[str, str]:
    """product_id → `product_text` from a products Parquet glob/directory or a raw JSONL file.

    JSONL lines are normalised with `records.normalize` (as the import pipeline does); lines it
    rejects are skipped here because they never reach training or scoring either.
    """
    wanted = None if product_ids is None else set(product_ids)
    texts: dict[str, str] = {}
    if source.endswith((".jsonl", ".json")):
        with open(source, encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = records.normalize(json.loads(line))
                except (records.RecordError, json.JSONDecodeError):
                    continue
                if wanted is None or record["product_id"] in wanted:
                    texts[record["product_id"]] = product_text(record)
        return texts
    import pyarrow.parquet as pq

    for path in parquet_files(source):
        for record in pq.read_table(path).to_pylist():
            if wanted is None or record["product_id"] in wanted:
                texts[record["product_id"]] = product_text(record)
    return texts


class TfidfBaseline:
    """(a): baseline A of `baseline_models` (TF-IDF word and character n-grams, LinearSVC) as a system."""

    def __init__(self, table: AncestorTable) -> None:
        self.table = table
        self.model = baseline_models.TfidfSvm()

    def fit(self, texts: list[str], gpt_ids: np.ndarray, stores: list[str] | None = None) -> TfidfBaseline:
        """Train on the labelled texts (gpt_id ≥ 0); `stores` give its temperature a store-grouped fit."""
        gpt_ids = np.asarray(gpt_ids, dtype=np.int64)
        keep = gpt_ids != NO_LABEL
        self.model.fit([t for t, k in zip(texts, keep, strict=True) if k], gpt_ids[keep],
                       None if stores is None else [s for s, k in zip(stores, keep, strict=True) if k])
        return self

    def predict(self, product_ids: np.ndarray, texts: list[str]) -> SystemOutput:
        """Argmax node for every product (coverage 1), its ancestors and their subtree probabilities."""
        level_ids, level_confidences = baseline_models.flat_paths(self.model.probabilities(texts),
                                                                  self.model.classes, self.table)
        return SystemOutput(TFIDF, np.asarray(product_ids, dtype=object),
                            metrics.path_end(level_ids, level_confidences)[0], level_ids, level_confidences,
                            {"model_version": "tfidf-linearsvc"})


def model_system(predictor, arrays: Mapping[str, np.ndarray], name: str = OURS, **options) -> SystemOutput:
    """A system from the exported model's outputs on embeddings, each store's products giving each other
    their store context (`options`: Predictor.predict's)."""
    from linnet_core.model.data import model_inputs

    outputs = predictor.predict_in_stores(model_inputs(arrays), arrays["store"], **options)
    return SystemOutput(name, np.asarray(arrays["product_id"], dtype=object),
                        outputs["gpt_id"].astype(np.int64), outputs["level_ids"].astype(np.int64),
                        outputs["level_confidences"].astype(np.float64),
                        {"model_version": predictor.model_version,
                         "taxonomy_version": predictor.metadata["taxonomy_version"],
                         "thresholds_version": predictor.thresholds_version})


def published_design(predictor, arrays: Mapping[str, np.ndarray], thresholds: list[float],
                     fused: bool = False, name: str = PUBLISHED) -> SystemOutput:
    """(b): the network's own logits (no calibration, no evidence: `fused` False), greedy decoding,
    these per-level thresholds plus the sensitive floors, no back-off. With `fused` the same decision
    over ours' calibrated, fused scores (the ablation that isolates decoding and back-off)."""
    from linnet_core.model.data import model_inputs

    outputs = predictor.predict_in_stores(model_inputs(arrays), arrays["store"], decoding="greedy",
                                          thresholds=thresholds, fused=fused)
    gpt_id = np.where(outputs["decision"] == LEAF, outputs["gpt_id"], NO_LABEL).astype(np.int64)
    confidences = outputs["level_confidences"].astype(np.float64)
    return SystemOutput(name, np.asarray(arrays["product_id"], dtype=object), gpt_id,
                        outputs["level_ids"].astype(np.int64), confidences,
                        {"model_version": predictor.model_version})
