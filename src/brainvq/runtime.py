"""Process-wide settings that make CPU training faster, and the precision a run uses."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # glibc mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
_applied = False


def keep_freed_memory(threshold_bytes: int = 1 << 30) -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of handing it back to the OS.

    A training step allocates and frees the same large activation buffers every step. By
    default glibc serves each block above its mmap threshold with a fresh ``mmap`` and
    unmaps it on free, so every step pays the kernel's page faults and zero-filling again
    (on the 2-core development machine: a quarter of the CPU time went to the kernel, and
    training ran 20-30 % slower). This raises the mmap and trim thresholds so those blocks
    come from, and stay in, the heap. The cost: the process keeps its peak memory until it
    exits. Idempotent; returns True when applied (glibc only; elsewhere a no-op).
    """
    global _applied
    if _applied:
        return True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 -- raises AttributeError unless this is glibc
    except (OSError, AttributeError, TypeError):
        return False
    ok = libc.mallopt(_M_MMAP_THRESHOLD, threshold_bytes) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    if not ok:
        log.debug("glibc mallopt refused the malloc thresholds; leaving defaults")
    _applied = ok
    return ok


#: CPU flags of units that run bf16 matrix products natively (AVX-512 BF16, AMX)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def _proc_cpuinfo() -> tuple[str, frozenset[str]]:
    """The CPU's model name and flags from /proc/cpuinfo (read once per process)."""
    model, flags = "unknown", frozenset()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "unknown":
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = frozenset(value.split())
    except OSError:  # not Linux: the flags are unknown
        pass
    return model, flags


def cpu_info() -> dict:
    """What this machine's CPU is, for run records: model name, the kernel set PyTorch uses
    (e.g. AVX2, AVX512), whether it has bf16 units (:data:`BF16_FLAGS`), and its thread count."""
    import os

    import torch

    model, flags = _proc_cpuinfo()
    return {
        "model": model,
        "torch_cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "bf16_units": bool(flags & set(BF16_FLAGS)),
        "threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
    }


#: the precisions a run may ask for ("auto": :func:`resolve_precision` picks one)
PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "16-mixed", "bf16-true")
#: environment variable that replaces ``auto`` (never an explicit precision), e.g. ``32-true``
PRECISION_ENV = "BRAINVQ_PRECISION"


def resolve_precision(requested: str, accelerator: str = "auto") -> str:
    """The Lightning precision a run uses when it asks for ``requested`` on ``accelerator``.

    Explicit precisions pass through unchanged (``32-true`` forces fp32). ``auto``: on a CPU run
    (accelerator ``cpu``, or ``auto`` without CUDA) ``bf16-mixed`` when the CPU has bf16 units
    (:data:`BF16_FLAGS`: AVX-512 BF16, AMX; on an AMD EPYC with AVX-512 BF16 a VQ-VAE training
    step ran 1.41x and a prior's 1.55x faster than in fp32), else ``32-true`` (e.g. AVX2-only
    CPUs); on a GPU ``bf16-mixed`` when it supports bf16, else ``32-true``; on anything else
    ``32-true``.

    ``$BRAINVQ_PRECISION`` (:data:`PRECISION_ENV`), when set, replaces ``auto`` (only ``auto``)
    with its value, e.g. ``BRAINVQ_PRECISION=32-true`` keeps every default run in fp32."""
    import os

    import torch

    if requested != "auto":
        return requested
    env = os.environ.get(PRECISION_ENV, "").strip()
    if env and env != "auto":
        if env not in PRECISIONS:
            from brainvq.errors import ConfigError

            raise ConfigError(f"${PRECISION_ENV}={env!r}: choose one of {', '.join(PRECISIONS)}")
        return env
    cuda = torch.cuda.is_available()
    if accelerator == "cpu" or (accelerator == "auto" and not cuda):
        return "bf16-mixed" if cpu_info()["bf16_units"] else "32-true"
    if accelerator in ("gpu", "cuda", "auto") and cuda:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    return "32-true"


def hardware_record(accelerator: str, precision: str) -> dict:
    """A run summary's record of where it ran and in what precision: the CPU (:func:`cpu_info`),
    the GPU when one is used, the precision asked for (``precision_requested``, e.g. ``auto``) and
    the one used (``precision``, :func:`resolve_precision`), and whether bf16 was used
    (``bf16_used``, the precision used) or could be (the CPU's ``bf16_units``)."""
    import torch

    gpu = (
        torch.cuda.get_device_name(0) if torch.cuda.is_available() and accelerator in ("gpu", "cuda", "auto") else None
    )
    used = resolve_precision(precision, accelerator)
    return {
        "cpu": cpu_info(),
        "gpu": gpu,
        "precision_requested": precision,
        "precision": used,
        "bf16_used": str(used).startswith("bf16"),
    }
