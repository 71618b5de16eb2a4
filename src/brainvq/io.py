"""Writing files safely: atomic writes that honour the user's umask, and JSON of plain values.

Every module that writes a summary, a figure or weights goes through here, so that a reader
never sees a half-written file and a killed writer leaves nothing a later run could mistake for
output.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

# atomic_write's temporary file: ".<name>.<writer pid>.tmp" beside the target
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _plain_write_mode(path: Path) -> int:
    """The permissions a plain ``open(path, "w")`` would leave: an existing file's own, else
    0o666 less the process's umask (libraries such as safetensors create files 0o600)."""
    if path.exists():
        return path.stat().st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``, so readers never see a partial file;
    the file gets the permissions a plain write would give it under the user's umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(path)
    try:
        write(tmp)
        os.chmod(tmp, _plain_write_mode(path))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: Path, text: str) -> Path:
    """Atomically write ``text`` (UTF-8)."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


def atomic_folder(path: Path, build: Callable[[Path], None]) -> None:
    """Call ``build(tmp)`` on a new empty folder beside ``path``, then rename it onto ``path``
    (replacing a folder there), so a reader never sees a half-built folder under that name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(path)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        build(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete temporary files (and folders) left in ``folder`` by an :func:`atomic_write` (or
    :func:`atomic_folder`) whose process was killed (SIGKILL cannot be caught); those of writers
    still running are kept."""
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        match = _TEMP_NAME.match(tmp.name)
        if not match or _alive(int(match["pid"])):
            continue
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def to_plain(obj: Any) -> Any:
    """Dataclasses/paths -> plain dicts/strings (what YAML, JSON and weights-only pickles hold)."""
    if dataclasses.is_dataclass(obj):
        return {k: to_plain(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _finite_or_none(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by None (JSON has no NaN or Infinity)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    return obj


def dumps_json(data: Any, default: Any = None) -> str:
    """``data`` as indented standard JSON: plain values (:func:`to_plain`), a NaN or infinite number
    written as ``null`` (no value), never the ``NaN``/``Infinity`` that other JSON readers refuse;
    ``default`` as in :func:`json.dumps`."""
    return json.dumps(_finite_or_none(to_plain(data)), indent=2, allow_nan=False, default=default)


def write_json(path: Path, data: dict) -> Path:
    """Atomically write ``data`` as indented, standard JSON (:func:`dumps_json`)."""
    atomic_write(path, lambda tmp: tmp.write_text(dumps_json(data)))
    return path


def write_png(path: Path, image: Any) -> Path:
    """Atomically write ``image`` (a (H,W) uint8 array or a PIL image) as a PNG."""
    from PIL import Image

    img = image if isinstance(image, Image.Image) else Image.fromarray(image)
    atomic_write(Path(path), lambda tmp: img.save(tmp, format="PNG"))
    return Path(path)


def write_arrays(path: Path, array: Any = None, **arrays: Any) -> Path:
    """Atomically write one numpy ``array`` as ``.npy``, or named ``arrays`` as a compressed ``.npz``
    (into an open file: numpy would add its suffix to a temporary name)."""
    import numpy as np

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, array) if array is not None else np.savez_compressed(fh, **arrays)

    atomic_write(Path(path), save)
    return Path(path)
