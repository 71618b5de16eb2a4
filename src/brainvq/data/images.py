"""Reading single grayscale image files with clear, one-line errors."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from brainvq.data.cache import cached_stack
from brainvq.errors import DataError

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
    images of another size are resized with a warning or refused (``on_wrong_size``); a
    non-square image is first padded to a square with black (:func:`pad_to_square`), never stretched.
    """
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            img = im.copy()
    except Image.DecompressionBombError:
        raise DataError(
            f"{path}: image too large to decode safely (over {Image.MAX_IMAGE_PIXELS * 2} pixels, PIL's limit)"
        ) from None
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
        w, h = img.size
        if on_wrong_size == "error":
            raise DataError(f"{path}: image is {w}x{h}, expected {size}x{size}")
        padded = f"padded to {max(w, h)}x{max(w, h)} and " if w != h else ""
        warnings.warn(f"{path}: image is {w}x{h}, {padded}resized to {size}x{size}", stacklevel=2)
        img = pad_to_square(img)
        if img.size != (size, size):
            img = img.resize((size, size), resample)
    return np.asarray(img, dtype=np.uint8)


def pad_to_square(img: Image.Image, fill: int = 0) -> Image.Image:
    """Centre ``img`` on a square canvas of its longer side, filled with ``fill`` (the background).

    Resizing the square afterwards keeps the aspect ratio: a non-square slice is never stretched.
    """
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    out = Image.new(img.mode, (side, side), fill)
    out.paste(img, ((side - w) // 2, (side - h) // 2))
    return out


def summarise_warnings(caught: list[warnings.WarningMessage], folder: Path) -> None:
    """Re-issue ``caught`` as one warning per kind of problem (resized / converted), with a count."""
    kinds: dict[str, list[str]] = {}
    for w in caught:
        msg = str(w.message)
        kind = "resized" if "resized" in msg else "converted" if "converted" in msg else msg
        kinds.setdefault(kind, []).append(msg)
    for msgs in kinds.values():
        more = f" (and {len(msgs) - 1} more files in {folder})" if len(msgs) > 1 else ""
        warnings.warn(msgs[0] + more, UserWarning, stacklevel=3)


def decode_stack(
    files: Sequence[Path],
    folder: Path,
    *,
    size: int,
    on_wrong_size: WrongSizePolicy = "resize",
    on_rgb: RGBPolicy = "convert",
    cache_dir: Path | None = None,
    tag: str | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Decode ``files`` with :func:`read_gray` into a cached (N,size,size) stack; one warning per kind."""
    decode = partial(read_gray, size=size, on_wrong_size=on_wrong_size, on_rgb=on_rgb)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = cached_stack(
            files,
            decode,
            (size, size),
            cache_dir=cache_dir,
            tag=tag or folder.name,
            extra={"wrong": on_wrong_size, "rgb": on_rgb, "non_square": "pad"},
            progress=progress,
        )
    summarise_warnings(caught, folder)
    return images
