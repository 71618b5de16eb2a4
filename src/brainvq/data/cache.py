"""Decode-once cache: a stack of decoded slices stored as a memory-mapped ``.npy``."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from brainvq.io import atomic_write


def default_cache_dir() -> Path:
    """``$BRAINVQ_CACHE`` or ``~/.cache/brainvq``."""
    env = os.environ.get("BRAINVQ_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "brainvq"


def content_key(files: Sequence[Path], extra: dict | None = None) -> str:
    """Hash of the file names, sizes and modification times (plus ``extra`` options)."""
    h = hashlib.sha1()
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    h.update(json.dumps(extra or {}, sort_keys=True).encode())
    return h.hexdigest()[:20]


def cached_stack(
    files: Sequence[Path],
    decode: Callable[[Path], np.ndarray],
    shape: tuple[int, int],
    *,
    cache_dir: Path | None,
    tag: str,
    extra: dict | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Decode ``files`` into an (N,H,W) uint8 array, cached on disk and memory-mapped.

    The cache file name is keyed by the folder contents, so an edited/added file
    invalidates it. The file is written atomically (:func:`brainvq.io.atomic_write`), so an
    interrupted run never leaves a half-written cache behind.
    With ``cache_dir=None`` the stack is decoded into memory without caching.
    """
    n = len(files)
    if cache_dir is None:
        out = np.empty((n, *shape), dtype=np.uint8)
        _decode_into(out, files, decode, tag, progress)
        return out
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{tag}-{content_key(files, {**(extra or {}), 'shape': shape})}.npy"
    if path.exists():
        try:
            arr = np.load(path, mmap_mode="r")
            if arr.shape == (n, *shape) and arr.dtype == np.uint8:
                return arr
        except (ValueError, OSError):
            pass  # unreadable cache: rebuild it

    def write(tmp: Path) -> None:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, *shape))
        _decode_into(out, files, decode, tag, progress)
        out.flush()
        del out

    atomic_write(path, write)
    return np.load(path, mmap_mode="r")


def _decode_into(
    out: np.ndarray, files: Sequence[Path], decode: Callable[[Path], np.ndarray], tag: str, progress: bool
):
    for i, f in enumerate(tqdm(files, desc=f"decode {tag}", disable=not progress, leave=False)):
        out[i] = decode(f)
