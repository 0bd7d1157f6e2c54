"""`EmbedProducts`: product records → records with text and image embeddings, or dead letters (stage
`embed`), as `dead_letters.Routed`.

RunInference with a small keyed `ModelHandler`: Beam batches (capped by `--embed_batch_size`), loads the
encoders once per worker process and shares them across threads. With `--embedding_table DIR` the
records first join the embedding table (`pipelines.embedding_table`), so only content it lacks is
encoded, and the run appends what it embedded. All decisions live in `linnet_core.encoders.embedder`;
this module reads bytes through `FileSystems`, counts and routes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from linnet_core.encoders import image as image_encoders
from linnet_core.encoders import text as text_encoders
from linnet_core.encoders.embedder import IMAGE_STATUSES, ProductEmbedder, Stored
from linnet_core.progress import Progress
from linnet_core.records import Reason, dead_letter
from linnet_core.training_data import ENCODERS_JSON
from pipelines import defaults
from pipelines.counters import NAMESPACE, counter
from pipelines.dead_letters import DEAD_LETTER, Routed
from pipelines.embedding_table import AppendToEmbeddingTable, LookUpEmbeddings

logger = logging.getLogger(__name__)

EMBEDDED = "embedded"
NEW_VECTORS = "new_vectors"
STAGE = "embed"
# RunInference's own metrics of the embedder (batch sizes, latencies), kept apart from other models'.
INFERENCE_NAMESPACE = f"{NAMESPACE}.embed"
NO_CACHE = "none"
# The embedding cache under the LinNét cache of the machine that embeds (a worker's, not the launcher's).
LOCAL_CACHE = "local"


class EmbeddingOptions(PipelineOptions):
    """Flags of the embedding stage (shared by every pipeline that embeds)."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        def flag(name: str, **kwargs: Any) -> None:
            parser.add_argument(f"--{name}", f"--{name.replace('_', '-')}", dest=name, **kwargs)

        flag("models_dir", default=None,
             help="prepared models (`linnet prepare-models`); a gs:// copy works on Dataflow (default: "
                  "the models of the machine that embeds, $LINNET_CACHE/models, which the worker "
                  "image carries)")
        flag("text_model", default=None,
             help="HF model directory or hub id (default: <models_dir>/multilingual-e5-small)")
        flag("text_engine", default="onnx", choices=text_encoders.ENGINES,
             help="onnx: fp32 ONNX Runtime (default, the same vectors on every CPU); onnx-int8: about twice "
                  "as fast, vectors differ between CPUs; torch: the PyTorch reference")
        flag("image_engine", default="onnx", choices=image_encoders.ENGINES,
             help="onnx (default) or torch, same MobileNet-V2 weights")
        flag("max_tokens", type=int, default=None,
             help="text truncation in tokens (default: when a model is scored, the cut its training data "
                  f"was embedded with; else {text_encoders.DEFAULT_MAX_TOKENS})")
        flag("embed_batch_size", type=int, default=32, help="upper cap on a batch")
        flag("embedding_cache", default=LOCAL_CACHE,
             help=f"local embedding cache directory, {LOCAL_CACHE!r} (default: $LINNET_CACHE/embeddings "
                  f"of the machine that embeds) or {NO_CACHE!r} to disable it")
        flag("encoder_threads", type=int, default=0,
             help="threads per encoder in each worker process (0: all cores)")
        flag("embedding_table", default=None,
             help="embedding table folder (local or gs://): vectors it holds are not recomputed and the "
                  "run appends the new ones as a Parquet part (default: none)")


@dataclass(frozen=True)
class EmbedConfig:
    """Validated embedding settings; picklable, so workers rebuild the encoders from it.

    Nothing in it is a path of the launcher's machine unless given: `models_dir` None and `cache_dir`
    `LOCAL_CACHE` resolve where the encoders load (`models`, `cache_folder`).
    """

    models_dir: str | None = None
    text_model: str | None = None
    text_engine: str = "onnx"
    image_engine: str = "onnx"
    max_tokens: int = text_encoders.DEFAULT_MAX_TOKENS
    batch_size: int = 32
    cache_dir: str | None = None
    threads: int = 0
    table_dir: str | None = None
    total: int | None = None  # products the run embeds at most, when known: the ETA of progress lines

    def __post_init__(self) -> None:
        if self.text_engine not in text_encoders.ENGINES:
            raise ValueError(f"text_engine {self.text_engine!r} not in {text_encoders.ENGINES}")
        if self.image_engine not in image_encoders.ENGINES:
            raise ValueError(f"image_engine {self.image_engine!r} not in {image_encoders.ENGINES}")
        if not 3 <= self.max_tokens <= 512:
            raise ValueError(f"max_tokens must be within 3..512, got {self.max_tokens}")
        if self.batch_size < 1:
            raise ValueError(f"embed_batch_size must be at least 1, got {self.batch_size}")
        if self.cache_dir and "://" in self.cache_dir:
            raise ValueError(f"embedding_cache must be a local directory (or {NO_CACHE!r}), got "
                             f"{self.cache_dir!r}")
        if self.threads < 0:
            raise ValueError(f"encoder_threads must be 0 (all cores) or more, got {self.threads}")

    def models(self) -> str:
        """The prepared models folder: `models_dir`, or this machine's default."""
        return self.models_dir or str(defaults.MODELS)

    def model_files(self) -> tuple[str, ...]:
        """What the configured engines read of `models()`, by relative name: all a remote copy fetches."""
        image = image_encoders.ENGINE_FILES[self.image_engine]
        if self.text_model:  # the text model lives elsewhere; the models folder serves the image encoder
            return (image,)
        folder = text_encoders.TEXT_MODEL_NAME
        text = text_encoders.engine_files(self.text_engine)
        return (image, *(f"{folder}/{name}" for name in text)) if text else (image, folder)

    def cache_folder(self) -> str | None:
        """The embedding cache folder on this machine (None: no cache)."""
        return str(defaults.CACHE / "embeddings") if self.cache_dir == LOCAL_CACHE else self.cache_dir

    @classmethod
    def from_options(cls, options: PipelineOptions, model_dir: str | None = None) -> EmbedConfig:
        """The config of `EmbeddingOptions` flags (`--embedding_cache none` disables the cache)."""
        return cls.from_flags(options.view_as(EmbeddingOptions), model_dir)

    @classmethod
    def from_flags(cls, flags: Any, model_dir: str | None = None) -> EmbedConfig:
        """The config of parsed `EmbeddingOptions` flags, from Beam's options or a plain argparse parser
        (the online service's). With `model_dir` (a model to score), texts are cut where that model's
        training data cut them, so a default changed since it was trained cannot skew its inputs.

        Raises:
            ValueError: `--max_tokens` differs from the model's cut.
        """
        cache = None if flags.embedding_cache in (None, "", NO_CACHE) else flags.embedding_cache
        trained = model_max_tokens(model_dir) if model_dir else None
        if flags.max_tokens and trained and flags.max_tokens != trained:
            raise ValueError(f"--max_tokens {flags.max_tokens}: the model at {model_dir} was trained on "
                             f"texts cut at {trained} tokens ({ENCODERS_JSON}); score it with those")
        max_tokens = flags.max_tokens or trained or text_encoders.DEFAULT_MAX_TOKENS
        return cls(flags.models_dir, flags.text_model, flags.text_engine, flags.image_engine,
                   max_tokens, flags.embed_batch_size, cache, flags.encoder_threads,
                   flags.embedding_table or None)


def model_max_tokens(model_dir: str) -> int | None:
    """Where the text encoder of a model's training data cut texts (the text encoder id that
    MODEL/encoders.json records); None for a model without that record."""
    path = FileSystems.join(model_dir, ENCODERS_JSON)
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as handle:
        return text_encoders.max_tokens_of(json.load(handle)["text"])


def read_uri(uri: str) -> bytes:
    """A file's bytes through Beam's FileSystems (local paths, gs://, ...), never decompressed.

    Raises:
        FileNotFoundError: the file does not exist.
        ImageError: status `unreadable` for a directory or a file this worker may not read (data errors a
            retry cannot fix). Other errors (a storage hiccup on an existing file) propagate so the runner
            retries the bundle.
    """
    try:
        with FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            return handle.read()
    except (IsADirectoryError, PermissionError) as error:
        raise image_encoders.ImageError(image_encoders.STATUS_UNREADABLE,
                                        f"cannot read {uri}: {error}") from None
    except Exception as error:
        if not FileSystems.exists(uri):
            raise FileNotFoundError(f"no such image: {uri}") from error
        raise


def local_copy(folder: str, only: Sequence[str] = ()) -> str:
    """`folder` itself when local; a remote one (gs://..., a model or table folder) is copied once into a
    temporary folder (with `only`, just those files and folders of it, by relative name)."""
    if "://" not in folder:
        return folder
    root = folder.rstrip("/")
    target = Path(tempfile.mkdtemp(prefix="linnet-copy-"))
    for metadata in FileSystems.match([f"{root}/**"])[0].metadata_list:
        relative = metadata.path[len(root) + 1:]
        if only and not any(relative == name or relative.startswith(f"{name}/") for name in only):
            continue
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(read_uri(metadata.path))
    logger.info("copied %s to %s", folder, target)
    return str(target)


def load_embedder(cfg: EmbedConfig) -> ProductEmbedder:
    """Both encoders (and the cache) as the config says; the slow step that runs once per worker."""
    models = local_copy(cfg.models(), only=cfg.model_files())
    threads = cfg.threads or os.cpu_count() or 1
    text_model = cfg.text_model or str(Path(models) / text_encoders.TEXT_MODEL_NAME)
    text = text_encoders.load_text_encoder(text_model, cfg.text_engine, cfg.max_tokens, threads)
    image = image_encoders.ImageEncoder(models, cfg.image_engine, threads)
    logger.info("loaded encoders %s and %s", text.encoder_id, image.encoder_id)
    return ProductEmbedder(text, image, cfg.cache_folder(), threads)


class ProductEmbeddingHandler(ModelHandler[tuple, PredictionResult, ProductEmbedder]):
    """RunInference handler: a batch of (product record, what the table holds for it or None) → one
    `Embedded` outcome per record."""

    def __init__(self, cfg: EmbedConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def load_model(self) -> ProductEmbedder:
        return load_embedder(self.cfg)

    def run_inference(self, batch: Sequence[tuple[dict, Stored | None]], model: ProductEmbedder,
                      inference_args: dict[str, Any] | None = None) -> Iterable[PredictionResult]:
        records = [record for record, _ in batch]
        stored = [known for _, known in batch] if self.cfg.table_dir else None
        outcomes = model.embed(records, read_uri, stored)
        Progress.shared("embedding", unit="products", total=self.cfg.total).update(len(batch))
        return [PredictionResult(record, outcome) for record, outcome in zip(records, outcomes, strict=True)]

    def batch_elements_kwargs(self) -> Mapping[str, Any]:
        # Full batches from the start: the encoders spread a batch over their threads, and BatchElements'
        # adaptive warm-up (1, 2, 4 ...) would leave cores idle; a bundle's tail still flushes smaller.
        return {"min_batch_size": self.cfg.batch_size, "max_batch_size": self.cfg.batch_size}

    def get_metrics_namespace(self) -> str:
        return INFERENCE_NAMESPACE


class KeyByProductIdFn(beam.DoFn):
    """Record → (product_id, record); a record without a product id becomes a dead letter."""

    def __init__(self, run_id: str | None) -> None:
        self.run_id = run_id
        self.dead = counter("embed_dead_letters")

    def process(self, record: Any) -> Iterable[Any]:
        product_id = record.get("product_id") if isinstance(record, Mapping) else None
        if product_id:
            yield str(product_id), record
            return
        self.dead.inc()
        yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(
            STAGE, Reason.EMBEDDING_FAILED, "record has no product_id", record, run_id=self.run_id))


class RouteEmbeddedFn(beam.DoFn):
    """(product_id, PredictionResult) → embedded record, or a dead letter; counts every outcome."""

    def __init__(self, run_id: str | None) -> None:
        self.run_id = run_id
        self.embedded = counter("products_embedded")
        self.dead = counter("embed_dead_letters")
        self.status = {status: counter(f"image_{status}") for status in IMAGE_STATUSES}
        self.hits = {(name, source): counter(f"{name}_{source}_hits")
                     for name in ("text", "image") for source in ("cache", "table")}
        self.encoded = counter("products_encoded")

    def process(self, keyed: tuple[str, PredictionResult]) -> Iterable[Any]:
        product_id, result = keyed
        outcome = result.inference
        if outcome.error is not None:
            self.dead.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(
                STAGE, Reason.EMBEDDING_FAILED, outcome.error, without_vectors(result.example),
                product_id=product_id, run_id=self.run_id))
            return
        self.embedded.inc()
        self.status[outcome.image_status].inc()
        for source, names in (("cache", outcome.cache_hits), ("table", outcome.table_hits)):
            for name in names:
                self.hits[name, source].inc()
        if outcome.encoded:
            self.encoded.inc()
        for new in outcome.new_vectors:
            yield beam.pvalue.TaggedOutput(NEW_VECTORS, new)
        yield outcome.record


def without_vectors(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record without its embedding vectors: what a dead letter keeps of an embedded record."""
    return {key: value for key, value in record.items() if not key.endswith("_embedding")}


def failed_batch_dead_letters(element: tuple[Sequence[tuple[str, dict]], Exception], stage: str
                              ) -> Iterator[dict[str, Any]]:
    """A batch of embedded records that RunInference failed on (`with_exception_handling`) → a dead
    letter per record, with the error: the model stages' (first pass, categorize, review queue) one rule."""
    batch, error = element
    for _, record in batch:
        yield dead_letter(stage, Reason.SCORING_FAILED, f"{type(error).__name__}: {error}",
                          without_vectors(record))


class EmbedProducts(beam.PTransform):
    """Product records → `Routed`: the records with their embeddings, and dead letters.

    An embedded record is the product record plus `text_embedding` (float32[384], L2-normalised),
    `image_embedding` (float32[1280], zeros without a usable photo), `image_present` (0.0/1.0) and
    `image_status` (`ok`, `no_image`, `missing_file`, `unreadable`). Every input comes out exactly once.
    With `cfg.table_dir` the embedding table is joined first and appended to (its new rows carry `run_id`).
    """

    def __init__(self, cfg: EmbedConfig | None = None, run_id: str | None = None) -> None:
        super().__init__()
        self.cfg = cfg or EmbedConfig()
        self.run_id = run_id

    @classmethod
    def from_options(cls, options: PipelineOptions, run_id: str | None = None, total: int | None = None,
                     model_dir: str | None = None) -> EmbedProducts:
        """The transform configured by `EmbeddingOptions` flags; `total`: products it embeds at most;
        `model_dir`: the model the embeddings are for (`EmbedConfig.from_flags`)."""
        return cls(dataclasses.replace(EmbedConfig.from_options(options, model_dir), total=total), run_id)

    def expand(self, products: beam.PCollection) -> Routed:
        keyed = products | "KeyByProductId" >> beam.ParDo(KeyByProductIdFn(self.run_id)).with_outputs(
            DEAD_LETTER, main="keyed")
        table = self.cfg.table_dir
        with_stored = (keyed.keyed | "LookUpEmbeddings" >> LookUpEmbeddings(table, read_uri) if table else
                       keyed.keyed | "NoTable" >> beam.MapTuple(lambda key, record: (key, (record, None))))
        routed = (with_stored
                  | "Embed" >> RunInference(KeyedModelHandler(ProductEmbeddingHandler(self.cfg)))
                  | "Route" >> beam.ParDo(RouteEmbeddedFn(self.run_id)).with_outputs(
                      DEAD_LETTER, NEW_VECTORS, main=EMBEDDED))
        if table:
            _ = routed[NEW_VECTORS] | "AppendToEmbeddingTable" >> AppendToEmbeddingTable(
                table, self.run_id)
        dead = (keyed[DEAD_LETTER], routed[DEAD_LETTER]) | "MergeDeadLetters" >> beam.Flatten()
        return Routed(routed[EMBEDDED], dead)
