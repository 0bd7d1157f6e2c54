"""`linnet build-training-data`: labelled products → embeddings → tf.Transform → sharded TFRecords.

Writes the training data directory of docs/ARCHITECTURE.md: gzip TFRecords per split, the
transform_fn (class weights and store factors learned on the train split), class_weights.json,
stats.json, category_embeddings.npz and dead letters. The output appears whole or not at all: a local
one is written beside and renamed, a gs:// one published by writing CURRENT last (`pipelines.publish`;
readers resolve it with `published_dir`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import tensorflow_transform.beam as tft_beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pvalue import TaggedOutput
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_transform.tf_metadata import metadata_io
from tfx_bsl.public import tfxio

from linnet_core import transform
from linnet_core.category_prior import CATEGORY_EMBEDDINGS, embed_categories
from linnet_core.records import RecordError, dead_letter
from linnet_core.taxonomy import Taxonomy
from linnet_core.training_data import (
    CLASS_WEIGHTS,
    DEFAULT_STORE_CAP,
    ENCODERS_JSON,
    SPLITS,
    TRAIN,
    SplitConfig,
    SplitStats,
    WeightConfig,
    assign_split,
    class_weights_report,
    hash_unit,
    level_sizes,
    parse_store_cap,
    resolve_label,
    stats_report,
    to_example,
)
from pipelines.bigquery import BigQueryOptions
from pipelines.counters import Accounting, RecordsLostError, beam_counters, counter
from pipelines.dead_letters import DEAD_LETTER, Routed
from pipelines.embed import (
    EmbedConfig,
    EmbeddingOptions,
    EmbedProducts,
    load_embedder,
    without_vectors,
)
from pipelines.io import PRODUCTS, DeduplicateProducts, WriteTable
from pipelines.options import OutputOptions, ProductInputOptions, pipeline_options, require
from pipelines.publish import published
from pipelines.sources import embedding_total, product_source

LOGGER = logging.getLogger(__name__)
EXAMPLES = "examples"
LABEL_STAGE = "label"
EMBED_STAGE = "embed"
BATCH_SIZE = 500


class TrainingDataOptions(PipelineOptions):
    """Flags of `linnet build-training-data` beyond input, taxonomy and output."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument("--sample", type=int, default=None,
                            help="use only N products (the same N on every run, chosen by id hash)")
        parser.add_argument("--split_by", "--split-by", dest="split_by", default="store",
                            help="comma-separated fields hashed for the split; the first non-empty "
                                 "one counts, product_id last (default: store)")
        parser.add_argument("--split_fractions", "--split-fractions", dest="split_fractions",
                            default="0.7,0.15,0.15", help="train,validation,calibration fractions")
        parser.add_argument("--weight_power", "--weight-power", dest="weight_power", type=float,
                            default=WeightConfig.power, help="class-weight exponent (1 = balanced)")
        parser.add_argument("--weight_smoothing", "--weight-smoothing", dest="weight_smoothing",
                            type=float, default=WeightConfig.smoothing, help="added to class counts")
        parser.add_argument("--weight_cap", "--weight-cap", dest="weight_cap", type=float,
                            default=WeightConfig.cap, help="largest class weight")
        parser.add_argument("--store_cap", "--store-cap", dest="store_cap", default=str(DEFAULT_STORE_CAP),
                            help="example weights × min(1, store_cap / store's train examples), so no "
                                 "store counts as more than store_cap examples; 0 or 'none' disables")
        parser.add_argument("--shards", type=int, default=8, help="TFRecord files per split")


@dataclass(frozen=True)
class BuildConfig:
    """Validated settings of one run; `output` is the folder being written (the staging folder)."""

    taxonomy: str
    output: str
    split: SplitConfig
    weights: WeightConfig
    sample: int | None
    shards: int
    run_id: str

    def __post_init__(self) -> None:
        if self.sample is not None and self.sample < 1:
            raise ValueError(f"--sample must be >= 1, got {self.sample}")
        if self.shards < 1:
            raise ValueError(f"--shards must be >= 1, got {self.shards}")


def _config(options: PipelineOptions, output: str) -> BuildConfig:
    inputs = options.view_as(ProductInputOptions)
    flags = options.view_as(TrainingDataOptions)
    try:
        fractions = tuple(float(part) for part in flags.split_fractions.split(","))
    except ValueError:
        raise ValueError(f"--split_fractions must be three numbers like 0.7,0.15,0.15, "
                         f"got {flags.split_fractions!r}") from None
    return BuildConfig(
        taxonomy=inputs.taxonomy,
        output=output,
        split=SplitConfig(fractions, tuple(f.strip() for f in flags.split_by.split(",") if f.strip())),
        weights=WeightConfig(flags.weight_power, flags.weight_smoothing, flags.weight_cap,
                             parse_store_cap(flags.store_cap)),
        sample=flags.sample,
        shards=flags.shards,
        run_id=options.view_as(OutputOptions).run_id or dt.datetime.now(dt.UTC).strftime(
            "%Y%m%dT%H%M%SZ"),
    )


class _CoreFn(beam.DoFn):
    """Loads the taxonomy once per worker and calls one core function per record; a `RecordError`
    becomes a dead letter of `stage` (embeddings left out of its raw JSON)."""

    stage = ""

    def __init__(self, taxonomy_path: str, run_id: str | None = None) -> None:
        self.taxonomy_path = taxonomy_path
        self.run_id = run_id
        self.taxonomy: Taxonomy | None = None
        self.rejected = counter(f"training_{self.stage}_rejected")

    def setup(self) -> None:
        self.taxonomy = Taxonomy.load(self.taxonomy_path)

    def process(self, record: dict[str, Any]) -> Iterator[Any]:
        try:
            yield self.convert(record)
        except RecordError as error:
            self.rejected.inc()
            yield TaggedOutput(DEAD_LETTER, dead_letter(self.stage, error.reason, str(error),
                                                        without_vectors(record),
                                                        run_id=self.run_id))

    def convert(self, record: dict[str, Any]) -> Any:
        raise NotImplementedError


class ValidateLabelFn(_CoreFn):
    """Passes a record whose label names one taxonomy node (`training_data.resolve_label`)."""

    stage = LABEL_STAGE

    def convert(self, record: dict[str, Any]) -> dict[str, Any]:
        resolve_label(record, self.taxonomy)
        return record


class ToExampleFn(_CoreFn):
    """Embedded record → (split, raw training example) (`training_data.to_example`)."""

    stage = EMBED_STAGE

    def __init__(self, taxonomy_path: str, split: SplitConfig, run_id: str | None = None) -> None:
        super().__init__(taxonomy_path, run_id)
        self.split = split

    def convert(self, record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return assign_split(record, self.split), to_example(record, self.taxonomy)


def _sample_rank(record: dict[str, Any]) -> float:
    return hash_unit(record["product_id"])


class SampleProducts(beam.PTransform):
    """The `n` products of smallest id hash: a uniform sample, the same on every run."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def expand(self, products: beam.PCollection) -> beam.PCollection:
        return (products
                | "Smallest" >> beam.combiners.Top.Smallest(self.n, key=_sample_rank)
                | "Flatten" >> beam.FlatMap(iter))


class BuildExamples(beam.PTransform):
    """Product records → `Routed`: (split, raw example) pairs, and dead letters.

    Labels are checked before embedding so no encoder time goes to records that will be dropped.

    Args:
        taxonomy_path: the taxonomy file (loaded once per worker).
        split: how records are assigned to splits.
        embed: a transform that routes embedded records as `EmbedProducts` does.
        run_id: recorded in dead letters.
    """

    def __init__(self, taxonomy_path: str, split: SplitConfig, embed: beam.PTransform,
                 run_id: str | None = None) -> None:
        super().__init__()
        self.taxonomy_path = taxonomy_path
        self.split = split
        self.embed = embed
        self.run_id = run_id

    def expand(self, products: beam.PCollection) -> Routed:
        labelled = products | "ValidateLabels" >> beam.ParDo(
            ValidateLabelFn(self.taxonomy_path, self.run_id)).with_outputs(DEAD_LETTER, main=PRODUCTS)
        unique = labelled[PRODUCTS] | "DropDuplicates" >> DeduplicateProducts(self.run_id)
        embedded = unique.records | "EmbedProducts" >> self.embed
        examples = embedded.records | "ToExamples" >> beam.ParDo(
            ToExampleFn(self.taxonomy_path, self.split, self.run_id)).with_outputs(DEAD_LETTER, main=EXAMPLES)
        dead = ((labelled[DEAD_LETTER], unique.dead_letter, embedded.dead_letter, examples[DEAD_LETTER])
                | "MergeDeadLetters" >> beam.Flatten())
        return Routed(examples[EXAMPLES], dead)


class EncodeExamplesFn(beam.DoFn):
    """Transformed RecordBatches → serialized tf.train.Examples (tfx_bsl's encoder, no Python protos)."""

    def __init__(self, schema: schema_pb2.Schema) -> None:
        self.schema = schema.SerializeToString()
        self.encoder: tfxio.RecordBatchToExamplesEncoder | None = None

    def setup(self) -> None:
        self.encoder = tfxio.RecordBatchToExamplesEncoder(schema_pb2.Schema.FromString(self.schema))

    def process(self, transformed: tuple[Any, Any]) -> Iterator[bytes]:
        record_batch, _ = transformed
        yield from self.encoder.encode(record_batch)


def _split_index(keyed: tuple[str, dict], _: int) -> int:
    return SPLITS.index(keyed[0])


def _examples_of(keyed_examples: list[tuple[str, dict]]) -> Any:
    return transform.to_record_batch([example for _, example in keyed_examples])


class TransformAndWriteExamples(beam.PTransform):
    """(split, raw example) → gzip TFRecords per split, weights from a transform_fn analysed on train.

    Returns (split, examples written) pairs; writes `transform_fn/` and `transformed_metadata/`.
    """

    def __init__(self, output: str, sizes: list[int], weights: WeightConfig, shards: int) -> None:
        super().__init__()
        self.output = output
        self.sizes = sizes
        self.weights = weights
        self.shards = shards

    def expand(self, keyed_examples: beam.PCollection) -> beam.PCollection:
        parts = keyed_examples | "PartitionBySplit" >> beam.Partition(_split_index, len(SPLITS))
        adapter = transform.tensor_adapter_config()
        batches = {
            split: (parts[i]
                    | f"Batch{split.title()}" >> beam.BatchElements(max_batch_size=BATCH_SIZE)
                    | f"ToRecordBatch{split.title()}" >> beam.Map(_examples_of))
            for i, split in enumerate(SPLITS)
        }
        counts = []
        with tft_beam.Context(temp_dir=f"{self.output}/tmp"):
            transform_fn = (batches[TRAIN], adapter) | "AnalyzeTrain" >> tft_beam.AnalyzeDataset(
                transform.make_preprocessing_fn(self.sizes, self.weights))
            for split in SPLITS:
                label = split.title()
                transformed, metadata = ((batches[split], adapter), transform_fn) | f"Transform{label}" >> (
                    tft_beam.TransformDataset(output_record_batches=True))
                encoded = transformed | f"Encode{label}" >> beam.ParDo(
                    EncodeExamplesFn(metadata.dataset_metadata.schema))
                _ = encoded | f"Write{label}" >> beam.io.WriteToTFRecord(
                    f"{self.output}/{split}/part", file_name_suffix=".tfrecord.gz", num_shards=self.shards,
                    compression_type=CompressionTypes.GZIP)
                counts.append(encoded | f"Count{label}" >> beam.combiners.Count.Globally()
                              | f"Key{label}" >> beam.WithKeys(split))
            _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(self.output)
        return counts | "MergeCounts" >> beam.Flatten()


class SplitStatsFn(beam.CombineFn):
    """Accumulates `training_data.SplitStats` of one split."""

    def create_accumulator(self) -> SplitStats:
        return SplitStats()

    def add_input(self, accumulator: SplitStats, example: dict[str, Any]) -> SplitStats:
        return accumulator.add(example)

    def merge_accumulators(self, accumulators) -> SplitStats:
        merged = SplitStats()
        for accumulator in accumulators:
            merged.merge(accumulator)
        return merged

    def extract_output(self, accumulator: SplitStats) -> SplitStats:
        return accumulator


def _reason(row: dict[str, Any]) -> str:
    return row["reason"]


def _reports(split_stats: list[tuple[str, SplitStats]], dead: dict[str, int], inputs: int,
             written: dict[str, int], split: SplitConfig, weights: WeightConfig,
             taxonomy_path: str) -> Iterator[tuple[str, str]]:
    taxonomy = Taxonomy.load(taxonomy_path)
    stats = dict(split_stats)
    yield "stats.json", json.dumps(stats_report(stats, dead, inputs, written, split, taxonomy),
                                   indent=2, ensure_ascii=False)
    train = stats.get(TRAIN) or SplitStats()
    yield CLASS_WEIGHTS, json.dumps(class_weights_report(train, taxonomy, weights),
                                           indent=2, ensure_ascii=False)


def _write_report(named: tuple[str, str], output: str) -> None:
    name, text = named
    with FileSystems.create(f"{output}/{name}") as handle:
        handle.write(text.encode("utf-8") + b"\n")


class WriteStats(beam.PTransform):
    """Writes `stats.json` and `class_weights.json` from the examples, dead letters, input count
    and TFRecord counts."""

    def __init__(self, output: str, taxonomy_path: str, split: SplitConfig, weights: WeightConfig) -> None:
        super().__init__()
        self.output = output
        self.taxonomy_path = taxonomy_path
        self.split = split
        self.weights = weights

    def expand(self, inputs: dict[str, beam.PCollection]) -> beam.PCollection:
        split_stats = inputs[EXAMPLES] | "SplitStats" >> beam.CombinePerKey(SplitStatsFn())
        dead = inputs[DEAD_LETTER] | "Reasons" >> beam.Map(_reason) | "CountReasons" >> (
            beam.combiners.Count.PerElement())
        return (
            split_stats
            | "CollectSplits" >> beam.combiners.ToList()
            | "Reports" >> beam.FlatMap(
                _reports, dead=beam.pvalue.AsDict(dead), inputs=beam.pvalue.AsSingleton(inputs["inputs"]),
                written=beam.pvalue.AsDict(inputs["written"]), split=self.split, weights=self.weights,
                taxonomy_path=self.taxonomy_path)
            | "WriteReports" >> beam.Map(_write_report, self.output)
        )


def build(pipeline: beam.Pipeline, cfg: BuildConfig, read: beam.PTransform, embed: beam.PTransform) -> None:
    """Adds the training-data graph to `pipeline` (writing under `cfg.output`).

    Args:
        read: a transform that routes products as `ReadProducts` does (`dead_letters.Routed`).
        embed: a transform that routes embedded records as `EmbedProducts` does.
    """
    taxonomy = Taxonomy.load(cfg.taxonomy)
    read = pipeline | "ReadProducts" >> read
    products = read.records
    if cfg.sample:
        products = products | "SampleProducts" >> SampleProducts(cfg.sample)
    examples = products | "BuildExamples" >> BuildExamples(cfg.taxonomy, cfg.split, embed, cfg.run_id)
    dead = (read.dead_letter, examples.dead_letter) | "MergeDeadLetters" >> beam.Flatten()
    inputs = ((products | "CountProducts" >> beam.combiners.Count.Globally(),
               read.dead_letter | "CountReadDeadLetters" >> beam.combiners.Count.Globally())
              | "MergeInputCounts" >> beam.Flatten()
              | "CountInputs" >> beam.CombineGlobally(sum))
    written = examples.records | "TransformAndWriteExamples" >> TransformAndWriteExamples(
        cfg.output, level_sizes(taxonomy), cfg.weights, cfg.shards)
    _ = dead | "WriteDeadLetters" >> WriteTable(
        f"{cfg.output}/dead_letters/part", "dead_letters", num_shards=1)
    _ = ({EXAMPLES: examples.records, DEAD_LETTER: dead, "inputs": inputs, "written": written}
         | "WriteStats" >> WriteStats(cfg.output, cfg.taxonomy, cfg.split, cfg.weights))


def check(stats: dict[str, Any]) -> None:
    """Raises RecordsLostError when records were lost: inputs ≠ examples + dead letters, or a split
    whose TFRecord count differs from its examples."""
    Accounting(stats["inputs"], stats["examples"], stats["dead_letters"]).check("build-training-data")
    for name, split in stats["splits"].items():
        if split["examples"] != split["written"]:
            raise RecordsLostError(f"split {name}: {split['examples']} examples but {split['written']} "
                                   "written")


def write_category_embeddings(taxonomy_path: str, embed: EmbedConfig, output: str) -> None:
    """DATA/category_embeddings.npz: every node's full path encoded by the text encoder the
    products' embeddings come from (the same `EmbedConfig`), with its encoder_id, for the taxonomy
    prior (`linnet_core.category_prior`). A few thousand short texts: the driver encodes them.
    DATA/encoders.json names both encoders."""
    embedder = load_embedder(embed)
    text = embedder.text
    embeddings = embed_categories(Taxonomy.load(taxonomy_path), text.encode, text.encoder_id, text.dim,
                                  embed.cache_folder())
    with FileSystems.create(f"{output}/{CATEGORY_EMBEDDINGS}") as handle:
        handle.write(embeddings.to_bytes())
    with FileSystems.create(f"{output}/{ENCODERS_JSON}") as handle:
        handle.write(json.dumps({"text": text.encoder_id, "image": embedder.image.encoder_id}).encode())
    LOGGER.info("wrote %d category embeddings (%s)", len(embeddings.ids), embeddings.encoder_id)


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None,
        embed: beam.PTransform | None = None) -> dict[str, Any]:
    """Builds the training data and returns (and prints) its stats.

    Args:
        argv: command-line flags (Beam flags included).
        test_pipeline: a pipeline to build into instead of one made from `argv`.
        embed: replaces `EmbedProducts` configured by its flags (`--embedding_cache`, `--models_dir`, ...).

    Raises:
        RecordsLostError: records were lost between input and output.
    """
    options = pipeline_options(argv, "linnet build-training-data", ProductInputOptions, OutputOptions,
                               TrainingDataOptions, EmbeddingOptions, BigQueryOptions, description=__doc__)
    require(options.view_as(OutputOptions), "output")
    with published(options.view_as(OutputOptions).output) as staging:
        cfg = _config(options, staging)
        pipeline = test_pipeline or beam.Pipeline(options=options)
        # --input files, or BigQuery with --input_table or --query: the same choice as `linnet score`'s
        total = embedding_total(options)
        total = min(total, cfg.sample) if total is not None and cfg.sample else total
        embed = embed or EmbedProducts.from_options(options, cfg.run_id, total)
        build(pipeline, cfg, product_source(options), embed)
        result = pipeline.run()
        result.wait_until_finish()
        metadata_io.write_metadata(transform.raw_metadata(), f"{staging}/metadata")
        with FileSystems.open(f"{staging}/stats.json") as handle:
            stats = json.loads(handle.read())
        check(stats)
        stats["counters"] = beam_counters(result)
        with FileSystems.create(f"{staging}/stats.json") as handle:
            handle.write(json.dumps(stats, indent=2, ensure_ascii=False).encode())
        write_category_embeddings(cfg.taxonomy, EmbedConfig.from_options(options), staging)
        if FileSystems.exists(f"{staging}/tmp"):
            FileSystems.delete([f"{staging}/tmp"])
    json.dump(stats, sys.stdout, indent=2, ensure_ascii=False)
    print()
    return stats
