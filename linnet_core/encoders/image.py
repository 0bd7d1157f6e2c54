"""Image encoder: MobileNet-V2 (torchvision's ImageNet weights) → 1,280-d pooled features.

The network is written here in plain torch (torchvision must not be installed beside the CPU torch) with
torchvision's module layout, so its state dict loads unchanged. Decoding trusts the bytes, never a file
extension, and every failure is an `ImageError` with a status the pipeline counts.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from linnet_core.encoders.runtime import fingerprint, single_threaded_session
from linnet_core.features import IMAGE_DIM

RESIZE = 256
CROP = 224
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
MOBILENET_FILE = "mobilenet_v2-b0353104.pth"
MOBILENET_ONNX = "mobilenet_v2.onnx"
ENGINE_FILES = {"onnx": MOBILENET_ONNX, "torch": MOBILENET_FILE}
ENGINES = tuple(ENGINE_FILES)
STATUS_OK = "ok"
STATUS_NO_IMAGE = "no_image"
STATUS_MISSING = "missing_file"
STATUS_UNREADABLE = "unreadable"
# (expansion t, output channels c, repeats n, first stride s) of MobileNet-V2's inverted residual stages.
STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
          (6, 320, 1, 1))
MAX_ASPECT = 8
# Transparent pixels are laid on white, the usual background of product photos.
BACKGROUND = (255, 255, 255)


class ImageError(ValueError):
    """An image that cannot be used, with the status recorded on the product (`unreadable`, ...)."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


def decode(data: bytes) -> Image.Image:
    """Bytes → RGB PIL image, whatever the format (JPEG, PNG, WebP, GIF ...), mode (alpha, palette, CMYK,
    16-bit grey) or EXIF orientation.

    Raises:
        ImageError: status `unreadable` for empty, truncated, unknown or oversized (decompression-bomb)
            data.
    """
    if not data:
        raise ImageError(STATUS_UNREADABLE, "empty image file")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        image = ImageOps.exif_transpose(image)
        if image.mode == "P":
            image = image.convert("RGBA")
        if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
            rgba = image.convert("RGBA")
            canvas = Image.new("RGB", rgba.size, BACKGROUND)
            canvas.paste(rgba, mask=rgba.getchannel("A"))
            return canvas
        if image.mode.startswith("I;16"):
            image = image.point(lambda value: value / 256).convert("L")
        return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, SyntaxError) as error:
        raise ImageError(STATUS_UNREADABLE, f"cannot decode image: {error}") from None


def preprocess(image: Image.Image) -> np.ndarray:
    """torchvision's `Resize(256)`, `CenterCrop(224)`, `ToTensor()`, `Normalize(ImageNet)` → (3, 224, 224).

    A banner longer than `MAX_ASPECT` times its width is first cut to its central band of that aspect:
    the centre crop never looks further out, and resizing all of a 1 × 5,000 strip would take gigabytes.
    """
    width, height = image.size
    if max(width, height) > MAX_ASPECT * min(width, height):
        band_width, band_height = min(width, MAX_ASPECT * height), min(height, MAX_ASPECT * width)
        left, top = (width - band_width) // 2, (height - band_height) // 2
        image = image.crop((left, top, left + band_width, top + band_height))
        width, height = image.size
    if width <= height:
        size = (RESIZE, int(RESIZE * height / width))
    else:
        size = (int(RESIZE * width / height), RESIZE)
    image = image.resize(size, Image.BILINEAR)
    left = int(round((size[0] - CROP) / 2.0))
    top = int(round((size[1] - CROP) / 2.0))
    # Channels first before the arithmetic, so the result is C-contiguous and a batch stacks without the
    # encoder copying it again on the calling thread (the same float32 operations on the same values).
    channels = np.asarray(image.crop((left, top, left + CROP, top + CROP))).transpose(2, 0, 1)
    pixels = np.ascontiguousarray(channels, dtype=np.float32) / 255.0
    return (pixels - MEAN[:, None, None]) / STD[:, None, None]


def load_pixels(data: bytes) -> np.ndarray:
    """Decode and preprocess in one step (what the pipeline calls per image)."""
    return preprocess(decode(data))


def build_mobilenet_v2():
    """MobileNet-V2 (width 1.0) feature extractor with torchvision's parameter names, without classifier."""
    import torch
    from torch import nn

    class ConvBNReLU(nn.Sequential):
        def __init__(self, inp: int, out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
            padding = (kernel - 1) // 2
            super().__init__(nn.Conv2d(inp, out, kernel, stride, padding, groups=groups, bias=False),
                             nn.BatchNorm2d(out), nn.ReLU6(inplace=True))

    class InvertedResidual(nn.Module):
        def __init__(self, inp: int, out: int, stride: int, expansion: int) -> None:
            super().__init__()
            hidden = inp * expansion
            self.use_residual = stride == 1 and inp == out
            layers: list[nn.Module] = [ConvBNReLU(inp, hidden, kernel=1)] if expansion != 1 else []
            layers += [ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
                       nn.Conv2d(hidden, out, 1, bias=False), nn.BatchNorm2d(out)]
            self.conv = nn.Sequential(*layers)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.conv(x) if self.use_residual else self.conv(x)

    class MobileNetV2Features(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            blocks: list[nn.Module] = [ConvBNReLU(3, 32, stride=2)]
            channels = 32
            for expansion, out, repeats, stride in STAGES:
                for index in range(repeats):
                    blocks.append(InvertedResidual(channels, out, stride if index == 0 else 1, expansion))
                    channels = out
            blocks.append(ConvBNReLU(channels, IMAGE_DIM, kernel=1))
            self.features = nn.Sequential(*blocks)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.features(x).mean(dim=(2, 3))

    return MobileNetV2Features()


def load_mobilenet_v2(weights: str | Path):
    """The feature extractor with torchvision's ImageNet weights (`classifier.*` ignored), in eval mode.

    Raises:
        RuntimeError: the file's feature keys or shapes differ from the architecture (strict load).
    """
    import torch

    state = torch.load(str(weights), map_location="cpu", weights_only=True)
    model = build_mobilenet_v2()
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("classifier.")}, strict=True)
    return model.eval()


def export_image_onnx(weights: str | Path, target: Path) -> Path:
    """ONNX export (dynamic batch) of the feature extractor, written atomically next to the weights."""
    import torch

    partial = target.with_suffix(".partial")
    torch.onnx.export(load_mobilenet_v2(weights), (torch.zeros(1, 3, CROP, CROP),), str(partial),
                      input_names=["pixels"], output_names=["features"], opset_version=17, dynamo=False,
                      dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}})
    os.replace(partial, target)
    return target


class ImageEncoder:
    """Preprocessed pixels (n, 3, 224, 224) → (n, 1280) float32 features, on ONNX Runtime or torch.

    `models_dir` holds `mobilenet_v2-b0353104.pth` and, for the ONNX engine, `mobilenet_v2.onnx`
    (both written by `linnet prepare-models`). The ONNX engine splits a batch into `threads` chunks run
    concurrently on single-threaded runs of one session (faster than one multi-threaded run:
    docs/experiments/2026-11-25-encoder-runtime.md); features do not depend on the batching (fp32, no
    batch statistics).
    """

    dim = IMAGE_DIM

    def __init__(self, models_dir: str | Path, engine: str = "onnx", threads: int | None = None) -> None:
        folder = Path(models_dir)
        self.threads = threads or os.cpu_count() or 1
        if engine == "onnx":
            path = folder / MOBILENET_ONNX
            if not path.exists():
                raise FileNotFoundError(f"no ONNX export at {path}: run `linnet prepare-models` or use the "
                                        f"torch engine")
            self._session = single_threaded_session(path)
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="onnx-image")
            self._run = self._run_onnx
        elif engine == "torch":
            import torch

            path = folder / MOBILENET_FILE
            if threads:
                torch.set_num_threads(threads)
            self._torch = torch
            self._model = load_mobilenet_v2(path)
            self._run = self._run_torch
        else:
            raise ValueError(f"unknown image engine {engine!r}; expected one of {ENGINES}")
        self.encoder_id = f"image/mobilenet_v2/{engine}/{fingerprint([path])}"

    def _run_chunk(self, pixels: np.ndarray) -> np.ndarray:
        return self._session.run(["features"], {"pixels": pixels})[0]

    def _run_onnx(self, pixels: np.ndarray) -> np.ndarray:
        size = math.ceil(len(pixels) / self.threads)
        chunks = [pixels[start:start + size] for start in range(0, len(pixels), size)]
        return np.concatenate(list(self._pool.map(self._run_chunk, chunks)))

    def _run_torch(self, pixels: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self._model(self._torch.from_numpy(pixels)).numpy()

    def encode(self, pixels: Sequence[np.ndarray]) -> np.ndarray:
        """Features of a batch of preprocessed images (an empty batch gives an empty array)."""
        if not len(pixels):
            return np.zeros((0, IMAGE_DIM), np.float32)
        return self._run(np.ascontiguousarray(np.stack(pixels), dtype=np.float32)).astype(np.float32)
