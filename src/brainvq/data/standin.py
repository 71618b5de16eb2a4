"""OASIS-format stand-in dataset generated from two real brain templates.

OASIS itself cannot be downloaded on every machine, so ``brainvq make-dataset`` writes a
synthetic dataset in exactly the OASIS PNG layout from the MNI ICBM152 2009a template
(with its grey/white matter probability maps) and the Colin27 brain. Each synthetic
"case" is one template warped like a different subject: a random affine (scaling, small
rotation and shift), a smooth random elastic deformation, a gamma/contrast change, a
smooth multiplicative bias field and mild noise. Numbers measured on it are stand-in
numbers, never OASIS numbers.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm.auto import tqdm

from brainvq.data.slices import MASK_VALUES
from brainvq.errors import ConfigError
from brainvq.io import atomic_folder

TEMPLATES = ("mni152_2009a", "colin27")
#: Axial range of the slices in MNI millimetres, bottom to top. OASIS' preprocessed slices
#: run from the temporal lobes (just above the cerebellar base) to near the vertex; the
#: MNI brain spans z = -72..+80 mm with the cerebellum below about -20 mm.
Z_RANGE_MM = (-24.0, 62.0)
#: In-plane pixel size: a 205 mm field of view, so the brain fills ~70% of the image like OASIS.
PIXEL_MM = 0.8
#: MNI y (anterior-posterior) of the field of view's centre: the brain spans about y = -104..+72 mm,
#: so centring on y = 0 would push the occipital lobe against the bottom edge.
Y_CENTRE_MM = -16.0
TEST_FIRST_CASE = 441  # OASIS test cases start at case_441


@dataclass
class StandInConfig:
    """Size and seed of the stand-in dataset (defaults: 864 training slices, 8+8 held-out cases).

    Validation and test hold 8 cases each (4 per template), so that the real-vs-real
    validation-vs-test baseline of the generation judges compares two like samples of subjects
    rather than 2 against 2; 24 slices per case keep the total (1248 slices) and the build time
    of the former 32/4/4 cases of 32 slices.
    """

    n_train_cases: int = 36
    n_val_cases: int = 8
    n_test_cases: int = 8
    slices_per_case: int = 24
    image_size: int = 256
    seed: int = 0

    def validate(self) -> None:
        for name in ("n_train_cases", "n_val_cases", "n_test_cases"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.slices_per_case < 2:
            raise ConfigError(f"slices_per_case must be >= 2, got {self.slices_per_case}")
        if not 32 <= self.image_size <= 1024:
            raise ConfigError(f"image_size must be in 32..1024, got {self.image_size}")
        if self.n_train_cases + self.n_val_cases + self.n_test_cases > 999:
            raise ConfigError("at most 999 cases fit the case_XXX naming")

    def case_ids(self) -> dict[str, list[int]]:
        """Disjoint case ids per split; test ids start at 441 like OASIS."""
        n_tv = self.n_train_cases + self.n_val_cases
        test0 = max(TEST_FIRST_CASE, n_tv + 1)
        return {
            "train": list(range(1, self.n_train_cases + 1)),
            "validate": list(range(self.n_train_cases + 1, n_tv + 1)),
            "test": list(range(test0, test0 + self.n_test_cases)),
        }

    def templates(self) -> dict[int, str]:
        """Template of each case: alternating within every split, so each split holds the two
        templates in equal numbers (one more of the first for an odd number of cases)."""
        return {case: TEMPLATES[k % 2] for ids in self.case_ids().values() for k, case in enumerate(ids)}


@dataclass
class _Template:
    t1: np.ndarray  # intensities scaled to [0, 1]
    gm: np.ndarray  # probabilities
    wm: np.ndarray
    world_to_voxel: np.ndarray  # 4x4


def _template_dir() -> Path:
    return Path(str(files("brainvq.data") / "templates"))


@lru_cache(maxsize=2)
def _load_template(name: str) -> _Template:
    import nibabel as nib

    d = _template_dir()
    if name == "mni152_2009a":
        img = nib.load(str(d / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"))
        t1 = img.get_fdata(dtype=np.float32)
        gm = nib.load(str(d / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz")).get_fdata(dtype=np.float32)
        wm = nib.load(str(d / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz")).get_fdata(dtype=np.float32)
        gm, wm = gm / max(gm.max(), 1e-6), wm / max(wm.max(), 1e-6)
    elif name == "colin27":
        img = nib.load(str(d / "colin27_ch2bet.nii.gz"))
        t1 = img.get_fdata(dtype=np.float32)
        gm, wm = _kmeans_tissue_maps(t1)
    else:
        raise ConfigError(f"unknown template {name!r}")
    t1 = np.clip(t1 / np.percentile(t1[t1 > 0], 99.5), 0, 1.2).astype(np.float32)
    return _Template(t1, gm.astype(np.float32), wm.astype(np.float32), np.linalg.inv(img.affine))


def _kmeans_tissue_maps(t1: np.ndarray, iters: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Colin27 has no tissue maps: 3-class 1-D k-means (CSF < GM < WM) on brain intensities,
    softened with a small Gaussian so that interpolation yields probability-like maps."""
    vals = t1[t1 > 0]
    centres = np.percentile(vals, [15, 50, 85]).astype(np.float64)
    for _ in range(iters):
        lab = np.argmin(np.abs(vals[:, None] - centres[None]), axis=1)
        centres = np.array([vals[lab == k].mean() for k in range(3)])
    lab = np.argmin(np.abs(t1[..., None] - centres), axis=-1)
    brain = t1 > 0
    gm = ndimage.gaussian_filter(((lab == 1) & brain).astype(np.float32), 0.6)
    wm = ndimage.gaussian_filter(((lab == 2) & brain).astype(np.float32), 0.6)
    return gm, wm


def _rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    rot_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rot_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rot_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rot_z @ rot_y @ rot_x


def _case_arrays(case_id: int, cfg: StandInConfig) -> tuple[np.ndarray, np.ndarray]:
    """(slices, masks) of one synthetic case: (S,H,W) uint8 image and OASIS mask values."""
    rng = np.random.default_rng([cfg.seed, case_id])
    tpl = _load_template(cfg.templates()[case_id])
    s, n = cfg.slices_per_case, cfg.image_size
    # output grid in MNI mm: rows run anterior (top) to posterior, columns left to right
    half = (n - 1) / 2
    px = PIXEL_MM * 256 / n
    z = np.linspace(*Z_RANGE_MM, s)
    ys = (half - np.arange(n)) * px + Y_CENTRE_MM
    xs = (np.arange(n) - half) * px
    zz, yy, xx = np.meshgrid(z, ys, xs, indexing="ij")
    pts = np.stack([xx.ravel(), yy.ravel(), zz.ravel()])  # (3, P) output-space mm
    # subject-like geometry: affine (scale, rotation, shift) + smooth elastic displacement
    scale = rng.uniform(0.92, 1.05, 3)  # OASIS slices are atlas-registered: sizes vary only a little
    rot = _rotation(*np.deg2rad(rng.uniform(-3, 3, 2)), np.deg2rad(rng.uniform(-6, 6)))
    shift = rng.uniform(-3, 3, 3)
    src = (rot @ (pts / scale[:, None])) + shift[:, None]
    coarse = rng.normal(0, 3.0, (3, 5, 5, 5))  # mm, on a 5^3 grid spanning the brain
    grid_idx = np.stack(
        [(pts[i] - lo) / (hi - lo) * 4 for i, (lo, hi) in enumerate(((-100, 100), (-120, 90), (-40, 80)))]
    )
    for i in range(3):
        src[i] += ndimage.map_coordinates(coarse[i], grid_idx, order=3, mode="nearest")
    vox = tpl.world_to_voxel[:3, :3] @ src + tpl.world_to_voxel[:3, 3:4]
    sample = lambda vol: ndimage.map_coordinates(vol, vox, order=1, cval=0.0).reshape(s, n, n)  # noqa: E731
    t1, gm, wm = sample(tpl.t1), sample(tpl.gm), sample(tpl.wm)
    brain = t1 > 0.08
    brain = ndimage.binary_opening(brain, structure=np.ones((1, 3, 3)))
    # intensity: gamma/contrast, smooth bias field, mild noise, per-case robust scaling
    bias_coef = rng.normal(0, 0.08, 4)
    nx, ny, nz = pts / 100.0
    bias = np.exp(bias_coef[0] * nx + bias_coef[1] * ny + bias_coef[2] * nz + bias_coef[3] * (nx**2 - ny**2)).reshape(
        s, n, n
    )
    img = np.clip(t1, 0, None) ** rng.uniform(0.8, 1.25) * bias
    img = ndimage.gaussian_filter(img, (0, 0.4, 0.4)) + rng.normal(0, 0.012, img.shape)
    img = np.where(brain, img, 0.0)
    top = np.percentile(img[brain], 99.5) if brain.any() else 1.0
    img = np.clip(img / top * rng.uniform(0.9, 1.0), 0, 1)
    mask = np.zeros((s, n, n), np.uint8)
    mask[brain] = MASK_VALUES[1]
    tissue = brain & (np.maximum(gm, wm) >= 0.35)
    mask[tissue & (gm >= wm)] = MASK_VALUES[2]
    mask[tissue & (wm > gm)] = MASK_VALUES[3]
    return (img * 255).round().astype(np.uint8), mask


def _case_job(case_id: int, cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_case_arrays` in a worker process, given the config as plain values (always picklable)."""
    return _case_arrays(case_id, StandInConfig(**cfg))


def _manifest(cfg: StandInConfig) -> dict:
    notes = (_template_dir() / "LICENSE-NOTES.md").read_text()
    return {
        "what": "synthetic OASIS-format stand-in made by brainvq make-dataset (NOT OASIS data)",
        "config": asdict(cfg),
        "templates": list(TEMPLATES),
        "z_range_mm": list(Z_RANGE_MM),
        "pixel_mm": PIXEL_MM,
        "case_ids": cfg.case_ids(),
        "template_of_case": {str(c): t for c, t in cfg.templates().items()},
        "template_licence_notes": notes,
    }


def _usable_cores() -> int:
    """CPU cores this process may run on (its affinity where the OS reports one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _write_cases(tmp: Path, jobs: list[tuple[str, int]], cases, cfg: StandInConfig, progress: bool) -> None:
    """Save each case's (slices, masks), in the order of ``jobs``, as OASIS-named PNGs."""
    for (split, case), (images, masks) in tqdm(
        zip(jobs, cases, strict=True), total=len(jobs), desc="stand-in cases", disable=not progress
    ):
        for k in range(cfg.slices_per_case):
            Image.fromarray(images[k]).save(tmp / f"keras_png_slices_{split}" / f"case_{case:03d}_slice_{k}.nii.png")
            Image.fromarray(masks[k]).save(tmp / f"keras_png_slices_seg_{split}" / f"seg_{case:03d}_slice_{k}.nii.png")


def make_standin_dataset(
    out_root: str | Path,
    config: StandInConfig | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    workers: int | None = None,
) -> Path:
    """Write the stand-in under ``out_root/keras_png_slices_data`` and return that folder.

    Deterministic for a given seed (each case has its own generator seeded by
    ``(seed, case_id)``), whatever the number of ``workers`` (processes building cases side
    by side; default: one per CPU core this process may use, at most 4). The dataset is built
    in a temporary folder and renamed into place when complete; an existing complete dataset
    with the same config is reused.
    """
    cfg = config or StandInConfig()
    cfg.validate()
    out_root = Path(out_root)
    final = out_root / "keras_png_slices_data"
    manifest_path = final / "standin_manifest.json"
    if final.exists() and not overwrite:
        try:
            if json.loads(manifest_path.read_text())["config"] == asdict(cfg):
                return final
        except (OSError, ValueError, KeyError):
            pass
        raise ConfigError(
            f"{final} already exists with other contents (e.g. an older default stand-in); "
            f"pass --overwrite to replace it (`brainvq make-dataset {out_root} --overwrite`, the demo's data too)"
        )
    atomic_folder(final, lambda tmp: _build(tmp, cfg, workers, progress))
    return final


def _build(tmp: Path, cfg: StandInConfig, workers: int | None, progress: bool) -> None:
    """Write the whole stand-in into the empty folder ``tmp``."""
    jobs = [(split, c) for split, ids in cfg.case_ids().items() for c in ids]
    for split in ("train", "validate", "test"):
        (tmp / f"keras_png_slices_{split}").mkdir(parents=True)
        (tmp / f"keras_png_slices_seg_{split}").mkdir(parents=True)
    workers = min(workers or min(_usable_cores(), 4), len(jobs))
    # spawned, not forked: the caller may hold torch's OpenMP threads, which a fork can deadlock
    pool = ProcessPoolExecutor(workers, multiprocessing.get_context("spawn")) if workers > 1 else None
    try:
        cases = (
            pool.map(_case_job, [c for _, c in jobs], [asdict(cfg)] * len(jobs))
            if pool
            else (_case_arrays(c, cfg) for _, c in jobs)
        )
        _write_cases(tmp, jobs, cases, cfg, progress)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    (tmp / "README.txt").write_text(
        "Synthetic stand-in for the preprocessed OASIS slices, generated by `brainvq make-dataset`\n"
        "from the MNI ICBM152 2009a template and the Colin27 brain (see standin_manifest.json for\n"
        "their licence notes). This is NOT OASIS data; results on it are stand-in results.\n"
    )
    (tmp / "standin_manifest.json").write_text(json.dumps(_manifest(cfg), indent=2))
