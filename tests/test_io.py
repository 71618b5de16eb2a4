"""brainvq.io is the one home of file writing: atomic files and folders, and every writer uses it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import brainvq
from brainvq.data.cache import cached_stack
from brainvq.io import atomic_folder, remove_stale_temp_files, write_text


def test_atomic_folder_replaces_the_whole_folder_or_leaves_it(tmp_path: Path):
    final = tmp_path / "data"

    def build(files: dict[str, str]):
        def write(tmp: Path) -> None:
            for name, text in files.items():
                if text is None:
                    raise RuntimeError("interrupted")
                (tmp / name).write_text(text)

        return write

    atomic_folder(final, build({"a": "1", "b": "2"}))
    atomic_folder(final, build({"c": "3"}))  # replaces, does not merge
    assert sorted(p.name for p in final.iterdir()) == ["c"]
    with pytest.raises(RuntimeError, match="interrupted"):
        atomic_folder(final, build({"d": "4", "e": None}))
    assert sorted(p.name for p in final.iterdir()) == ["c"]  # the old folder, whole
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # no temporary folder left


def test_a_killed_builders_temporary_folder_is_removed(tmp_path: Path):
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout)
    stale = tmp_path / f".data.{dead}.tmp"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "x.png").write_bytes(b"x")
    assert remove_stale_temp_files(tmp_path) == [stale] and not stale.exists()


def test_an_interrupted_cache_leaves_nothing_and_a_complete_one_is_kept(tmp_path: Path):
    files = [tmp_path / f"{i}.png" for i in range(4)]
    for f in files:
        f.write_bytes(b"x")
    cache = tmp_path / "cache"

    def failing(path: Path) -> np.ndarray:
        if path.name == "2.png":
            raise OSError("disk gone")
        return np.full((4, 4), int(path.stem), np.uint8)

    with pytest.raises(OSError, match="disk gone"):
        cached_stack(files, failing, (4, 4), cache_dir=cache, tag="t", progress=False)
    assert list(cache.iterdir()) == []
    good = cached_stack(files, lambda p: np.full((4, 4), int(p.stem), np.uint8), (4, 4), cache_dir=cache, tag="t")
    assert [int(im[0, 0]) for im in good] == [0, 1, 2, 3] and len(list(cache.iterdir())) == 1


#: a rename by hand (the atomic writers' own step)
_RENAME = re.compile(r"os\.(replace|rename)\(")
#: writing a file by hand (fine on a line that writes to an atomic writer's ``tmp`` path)
_WRITE = re.compile(r"\.(write_text|write_bytes)\(|\bopen\([^)]*[\"']w")


def test_every_writer_goes_through_io():
    root = Path(brainvq.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        if path == root / "io.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if _RENAME.search(code) or (_WRITE.search(code) and "tmp" not in code):
                found.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    assert not found, "write through brainvq.io (atomic_write, write_text, write_json, atomic_folder):\n" + "\n".join(
        found
    )


def test_write_text_is_atomic_and_returns_the_path(tmp_path: Path):
    path = write_text(tmp_path / "sub" / "a.md", "héllo\n")
    assert path.read_text(encoding="utf-8") == "héllo\n" and sorted(p.name for p in path.parent.iterdir()) == ["a.md"]
