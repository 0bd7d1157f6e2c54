"""Image encoder: decoding by content, torchvision-equivalent preprocessing, MobileNet-V2 features."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from linnet_core.encoders.image import (
    CROP,
    MEAN,
    MOBILENET_FILE,
    STATUS_UNREADABLE,
    STD,
    ImageEncoder,
    ImageError,
    decode,
    load_pixels,
    preprocess,
)
from linnet_core.encoders.prepare import min_cosine
from pipelines import defaults

pytestmark = pytest.mark.shared_data
PHOTOS = defaults.SHARED_DATA / "products" / "images"
JPEG = PHOTOS / "100fp2010_c797e63e-7927-48cb-b869-07a8e1b7a3c8.jpg"
JPEG_NAMED_WEBP = PHOTOS / "1247148-2.webp"
PNG_RGBA = PHOTOS / "2tier2022-0_64e6f0f6-03b7-4ad2-ba4c-69a87fd03804.png"
PNG_RGBA_NAMED_WEBP = PHOTOS / "9779927f-59e6-4918-afb9-41b090d93ea2.webp"
PNG_PALETTE = PHOTOS / "874574-1600-1600.png"
JPEG_GREY = PHOTOS / "dstg1804-1.jpg"
REAL = [JPEG, JPEG_NAMED_WEBP, PNG_RGBA, PNG_RGBA_NAMED_WEBP, PNG_PALETTE, JPEG_GREY]


@pytest.fixture(scope="module")
def encoder(models_dir: str) -> ImageEncoder:
    return ImageEncoder(models_dir, "onnx", threads=2)


def _encoded(image: Image.Image, fmt: str, **save_args) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **save_args)
    return out.getvalue()


def test_real_photos_decode_by_content_whatever_their_name() -> None:
    for path in REAL:
        image = decode(path.read_bytes())
        assert image.mode == "RGB" and min(image.size) > 0, path.name


def test_crafted_formats_decode(tmp_path: Path) -> None:
    photo = Image.open(JPEG).convert("RGB")
    png_named_jpg = tmp_path / "photo.jpg"
    png_named_jpg.write_bytes(_encoded(photo, "PNG"))
    cmyk = _encoded(photo.convert("CMYK"), "JPEG", quality=95)
    webp = _encoded(photo, "WEBP", quality=95)
    grey16 = _encoded(photo.convert("L").convert("I;16"), "PNG")
    reference = load_pixels(JPEG.read_bytes())
    for data in (png_named_jpg.read_bytes(), cmyk, webp):
        pixels = load_pixels(data)
        assert pixels.shape == reference.shape
        assert np.abs(pixels - reference).mean() < 0.1
    assert decode(grey16).mode == "RGB"


def test_transparency_is_laid_on_white() -> None:
    clear = Image.new("RGBA", (300, 300), (10, 200, 30, 0))
    assert decode(_encoded(clear, "PNG")).getpixel((150, 150)) == (255, 255, 255)


@pytest.mark.parametrize("data", [b"", b"not an image at all", JPEG.read_bytes()[:300],
                                  b"\x89PNG\r\n\x1a\n" + bytes(64)],
                         ids=["empty", "text", "truncated", "png-header"])
def test_bad_bytes_are_unreadable(data: bytes) -> None:
    with pytest.raises(ImageError) as error:
        load_pixels(data)
    assert error.value.status == STATUS_UNREADABLE


def test_preprocessing_matches_torchvision_arithmetic() -> None:
    wide = Image.new("RGB", (600, 300), (255, 0, 128))
    pixels = preprocess(wide)
    assert pixels.shape == (3, CROP, CROP) and pixels.dtype == np.float32
    expected = (np.array([255, 0, 128], np.float32) / 255.0 - MEAN) / STD
    np.testing.assert_allclose(pixels[:, 100, 100], expected, rtol=1e-5)
    # Resize(256) keeps the aspect ratio (512×256 here), CenterCrop takes the middle: a stripe at
    # x = 300 of the original lands at 256 of the resized image, i.e. column 256 − 144 = 112 of the crop.
    striped = Image.new("RGB", (600, 300), (0, 0, 0))
    striped.paste((255, 255, 255), (296, 0, 304, 300))
    column = preprocess(striped)[0, 112, :]
    brightest = np.flatnonzero(column >= column.max() - 1e-3)
    assert abs(brightest.mean() - 112) <= 1


def test_extreme_banners_are_cut_to_their_centre_not_resized_whole() -> None:
    banner = Image.new("RGB", (20_000, 2), (0, 0, 0))
    banner.paste((255, 255, 255), (9_990, 0, 10_010, 2))
    pixels = preprocess(banner)
    assert pixels.shape == (3, CROP, CROP)
    np.testing.assert_allclose(pixels[:, 100, 100], (1 - MEAN) / STD, rtol=1e-5)
    moderate = Image.new("RGB", (1_000, 200), (40, 80, 120))
    np.testing.assert_allclose(preprocess(moderate)[:, 0, 0], (np.array([40, 80, 120]) / 255 - MEAN) / STD,
                               rtol=1e-5)


def test_features_are_finite_deterministic_and_engines_agree(encoder: ImageEncoder, models_dir: str) -> None:
    pixels = [load_pixels(path.read_bytes()) for path in REAL]
    first = encoder.encode(pixels)
    assert first.shape == (len(REAL), 1280) and first.dtype == np.float32
    assert np.isfinite(first).all() and (first >= 0).all() and (first.sum(axis=1) > 0).all()
    np.testing.assert_array_equal(first, encoder.encode(pixels))
    np.testing.assert_allclose(encoder.encode(pixels[:1]), first[:1], atol=1e-4)
    reference = ImageEncoder(models_dir, "torch", threads=2).encode(pixels)
    assert min_cosine(first, reference) > 0.9999
    assert encoder.encode([]).shape == (0, 1280)


def test_features_separate_different_products(encoder: ImageEncoder) -> None:
    pixels = [load_pixels(path.read_bytes()) for path in (JPEG, PNG_RGBA)]
    flipped = load_pixels(_encoded(Image.open(JPEG).convert("RGB").transpose(Image.FLIP_LEFT_RIGHT), "PNG"))
    a, b, a_flipped = encoder.encode([*pixels, flipped])
    assert min_cosine(a[None], a_flipped[None]) > min_cosine(a[None], b[None])


def test_imagenet_head_on_our_features_names_the_product(encoder: ImageEncoder, models_dir: str) -> None:
    """torchvision's own classifier layer, applied to our features, must recognise plain product shots:
    this catches channel-order, normalisation and architecture mistakes that finite features would hide."""
    import torch

    head = torch.load(str(Path(models_dir) / MOBILENET_FILE), map_location="cpu", weights_only=True)
    weight, bias = head["classifier.1.weight"].numpy(), head["classifier.1.bias"].numpy()
    photos = {"1715945849_prima-16cm.jpg": 567, "kfb250-w.jpg": 968}  # ImageNet: frying pan, cup
    logits = encoder.encode([load_pixels((PHOTOS / name).read_bytes()) for name in photos]) @ weight.T + bias
    assert logits.argmax(axis=1).tolist() == list(photos.values())


def test_unknown_engine_and_missing_export(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown image engine"):
        ImageEncoder(tmp_path, "tflite")
    with pytest.raises(FileNotFoundError, match="prepare-models"):
        ImageEncoder(tmp_path, "onnx")
