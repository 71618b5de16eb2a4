"""A run folder: the names of its files (:class:`RunLayout`), the record of its stages that
lets a killed run continue (:class:`StageLedger`), and the claim a command takes on its output
folder before any work (:func:`claim_folder`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from brainvq.errors import OutputError
from brainvq.io import to_plain, write_json

try:
    import fcntl
except ImportError:  # not on Windows: folders are checked but not locked there
    fcntl = None  # type: ignore[assignment]

#: the lock file of a folder a command writes (held with flock, which the OS drops when the process dies)
LOCK_NAME = ".brainvq.lock"


@dataclass(frozen=True)
class RunLayout:
    """Every file of a ``demo`` / ``pipeline`` run folder that the pipeline, the report and the
    CLI name, in one place."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def vqvae_dir(self) -> Path:
        return self.root / "vqvae"

    @property
    def vqvae_weights(self) -> Path:
        return self.vqvae_dir / "vqvae.safetensors"

    @property
    def vqvae_eval(self) -> Path:
        return self.vqvae_dir / "eval_metrics.json"

    @property
    def generation_decoder_dir(self) -> Path:
        """The generation decoder's training run (``brainvq sharpen`` of :attr:`vqvae_weights`)."""
        return self.root / "generation_decoder"

    @property
    def generation_decoder(self) -> Path:
        """The generation decoder: the VQ-VAE with its decoder fine-tuned adversarially (same codes)."""
        return self.generation_decoder_dir / "vqvae.safetensors"

    @property
    def prior_dir(self) -> Path:
        return self.root / "prior"

    @property
    def prior_weights(self) -> Path:
        return self.prior_dir / "prior.safetensors"

    @property
    def prior_summary(self) -> Path:
        return self.prior_dir / "train_summary.json"

    @property
    def generation_dir(self) -> Path:
        return self.root / "generation"

    @property
    def generation_metrics(self) -> Path:
        return self.generation_dir / "generation_metrics.json"

    @property
    def real_vs_generated(self) -> Path:
        return self.generation_dir / "samples" / "real_vs_generated.png"

    @property
    def pretrained_dir(self) -> Path:
        return self.root / "pretrained"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def stages(self) -> Path:
        return self.root / "stages.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    def read_summary(self) -> dict:
        """The run summary ({} when there is none); folders of earlier releases call it demo_summary.json."""
        for path in (self.summary, self.root / "demo_summary.json"):
            if path.is_file():
                return json.loads(path.read_text())
        return {}


def find_generation_decoder(vqvae_path: str | Path) -> Path | None:
    """The run folder's generation decoder when ``vqvae_path`` is a run folder's
    ``ROOT/vqvae/vqvae.safetensors`` and ``ROOT/generation_decoder/vqvae.safetensors`` exists, else None."""
    path = Path(vqvae_path)
    layout = RunLayout(path.parent.parent)
    if path != layout.vqvae_weights or not layout.generation_decoder.is_file():
        return None
    return layout.generation_decoder


def config_key(config: dict) -> str:
    """A short hash of a stage's configuration (plain values)."""
    return hashlib.sha256(json.dumps(to_plain(config), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class StageLedger:
    """What each stage of a run was configured with and whether it finished (``stages.json``).

    A rerun of the same command on the same folder reuses every stage that finished with the
    same configuration, resumes the one that was interrupted from its last checkpoint, and redoes
    a stage whose configuration changed (and so every stage after it, whose configuration holds
    the key of the one before), saying why in :attr:`notes`. ``spent_s`` is the run's time up to
    the last record, which a rerun's time budget counts as already spent."""

    path: Path
    stages: dict[str, dict] = field(default_factory=dict)
    spent_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, path: Path, fresh: bool = False) -> StageLedger:
        if fresh or not Path(path).is_file():
            return cls(Path(path))
        doc = json.loads(Path(path).read_text())
        return cls(Path(path), doc.get("stages", {}), float(doc.get("spent_s", 0.0)))

    def plan(self, name: str, config: dict) -> str:
        """ "reuse" (finished with this configuration), "resume" (interrupted with it) or "fresh"."""
        record = self.stages.get(name)
        if record is None:
            return "fresh"
        if record["key"] != config_key(config):
            changed = sorted(
                k for k in {*config, *record["config"]} if record["config"].get(k) != to_plain(config.get(k))
            )
            self.notes.append(f"redoing {name}: its configuration changed ({', '.join(changed)})")
            return "fresh"
        return "reuse" if record["status"] == "done" else "resume"

    def result(self, name: str) -> dict:
        return self.stages[name]["result"]

    def record(self, name: str, config: dict, spent_s: float, result: dict | None = None) -> None:
        """Write down that ``name`` started (``result`` None) or finished with ``result``."""
        status = "started" if result is None else "done"
        self.stages[name] = {"key": config_key(config), "config": to_plain(config), "status": status, "result": result}
        self.spent_s = spent_s
        write_json(self.path, {"stages": self.stages, "spent_s": round(spent_s, 1)})


class EarlierOutputs(OutputError):
    """The output folder holds files an earlier run of the same command wrote (:attr:`names`)."""

    def __init__(self, folder: Path, names: list[str]) -> None:
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        super().__init__(f"{folder} holds the outputs of an earlier run ({shown})")
        self.names = names


def _make_folder(folder: Path) -> list[Path]:
    """Create ``folder`` (and its parents), or stop with one line saying why it cannot be one;
    returns the folders it created, deepest first."""
    created = []
    for p in (folder, *folder.parents):
        if p.exists() and not p.is_dir():
            raise OutputError(f"{folder} is a file, not a folder" if p == folder else f"{folder}: {p} is a file")
        if p.exists():
            break
        created.append(p)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        raise OutputError(f"{folder}: permission denied, cannot create the folder") from None
    except OSError as exc:
        raise OutputError(f"{folder}: cannot create the folder ({exc.strerror or exc})") from None
    return created


def _lock(folder: Path) -> int:
    """An open descriptor of ``folder``'s lock file, locked; stops with one line when the folder is
    not writable or another process holds the lock."""
    for _ in range(3):
        fd = _try_lock(folder)
        if fd is not None:
            return fd
    raise OutputError(f"{folder}: another brainvq command keeps taking and releasing this folder; try again")


def _try_lock(folder: Path) -> int | None:
    """:func:`_lock`'s one attempt; None when the lock file it locked was removed meanwhile by a
    holder releasing the folder (then a fresh one must be locked)."""
    try:
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        raise OutputError(f"{folder}: permission denied, the folder is not writable") from None
    except OSError as exc:
        raise OutputError(f"{folder}: the folder is not writable ({exc.strerror or exc})") from None
    if fcntl is None:
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # BlockingIOError: another process holds it
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise OutputError(
            f"{folder}: another brainvq command (pid {holder}) is writing this folder; "
            "wait for it to finish or write elsewhere"
        ) from None
    try:
        same = os.path.samestat(os.fstat(fd), os.stat(folder / LOCK_NAME))
    except FileNotFoundError:
        same = False
    if not same:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def _release(folder: Path, fd: int, created: list[Path]) -> None:
    """Remove the lock file (while still holding it) and the folders the claim created that stayed
    empty (a command refused or failed before writing anything leaves nothing), then unlock."""
    (folder / LOCK_NAME).unlink(missing_ok=True)
    _remove_empty(created)
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _remove_empty(created: list[Path]) -> None:
    for p in created:
        try:
            p.rmdir()
        except OSError:  # not empty: outputs were written
            break


def _clear(folder: Path, names: list[str]) -> None:
    for name in names:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def claim_folder(folder: str | Path, owned: Sequence[str] = (), overwrite: bool = False) -> Iterator[Path]:
    """Make ``folder`` ready for a command's outputs before it does any work, and hold it while it runs.

    Stops with one line (:class:`OutputError`) when ``folder`` is a file, lies under a file or is not
    writable, or when another process holds it: the lock is an ``flock`` on :data:`LOCK_NAME` in
    the folder, released on exit and by the OS when the process dies. ``owned``: the names (glob
    patterns) of what the command writes there; an earlier run's are refused
    (:class:`EarlierOutputs`) unless ``overwrite``, which deletes them first, so that one folder
    never mixes two runs' outputs."""
    folder = Path(folder)
    created = _make_folder(folder)
    try:
        fd = _lock(folder)
    except OutputError:
        _remove_empty(created)
        raise
    try:
        earlier = sorted({p.name for pattern in owned for p in folder.glob(pattern)})
        if earlier and not overwrite:
            raise EarlierOutputs(folder, earlier)
        _clear(folder, earlier)
        yield folder
    finally:
        _release(folder, fd, created)
