"""Reading single grayscale image files with clear, one-line errors."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from brainvq.data.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
WrongSizePolicy = Literal["resize", "error"]
RGBPolicy = Literal["convert", "error"]


def list_image_files(folder: Path) -> list[Path]:
    """Sorted PNG/JPEG files directly inside ``folder``; DataError if missing or empty."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{folder}: no PNG/JPEG images in this folder")
    return files


def read_gray(
    path: Path,
    size: int,
    *,
    on_wrong_size: WrongSizePolicy = "resize",
    on_rgb: RGBPolicy = "convert",
    resample: int = Image.BILINEAR,
) -> np.ndarray:
    """Read one image as a (size,size) uint8 array.

    RGB images are converted to grey with a warning (``on_rgb="convert"``) or refused;
    images of another size are resized with a warning or refused (``on_wrong_size``).
    """
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            img = im.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot decode image (corrupt or truncated?): {exc}") from None
    if mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LA"):
        if mode in ("RGB", "RGBA", "CMYK", "YCbCr") and on_rgb == "error":
            raise DataError(f"{path}: colour image (mode {mode}); expected 8-bit grayscale")
        if mode in ("RGB", "RGBA", "CMYK", "YCbCr"):
            warnings.warn(f"{path}: colour image (mode {mode}) converted to grayscale", stacklevel=2)
        img = img.convert("L")
    elif mode in ("I;16", "I;16B", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = arr.max()
        img = Image.fromarray((arr / top * 255 if top > 0 else arr).astype(np.uint8))
    elif mode == "1":
        img = img.convert("L")
    elif mode != "L":
        raise DataError(f"{path}: unsupported image mode {mode!r}")
    if img.size != (size, size):
        if on_wrong_size == "error":
            raise DataError(f"{path}: image is {img.size[0]}x{img.size[1]}, expected {size}x{size}")
        warnings.warn(f"{path}: image is {img.size[0]}x{img.size[1]}, resized to {size}x{size}", stacklevel=2)
        img = img.resize((size, size), resample)
    return np.asarray(img, dtype=np.uint8)
