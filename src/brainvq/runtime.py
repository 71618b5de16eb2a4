"""Process-wide settings that make CPU training faster."""

from __future__ import annotations

import ctypes
import ctypes.util
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


def cpu_info() -> dict:
    """What this machine's CPU is, for run records: model name, the kernel set PyTorch uses
    (e.g. AVX2, AVX512), whether it has bf16 units (:data:`BF16_FLAGS`), and its thread count."""
    import os

    import torch

    model, flags = "unknown", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "unknown":
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:  # not Linux: the flags are unknown
        pass
    return {
        "model": model,
        "torch_cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "bf16_units": bool(flags & set(BF16_FLAGS)),
        "threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
    }


def hardware_record(accelerator: str, precision: str) -> dict:
    """A run summary's record of where it ran and in what precision: the CPU (:func:`cpu_info`),
    the GPU when one is used, and whether bf16 was used (precision) or could be (bf16 units)."""
    import torch

    gpu = (
        torch.cuda.get_device_name(0) if torch.cuda.is_available() and accelerator in ("gpu", "cuda", "auto") else None
    )
    return {"cpu": cpu_info(), "gpu": gpu, "precision": precision, "bf16_used": precision.startswith("bf16")}
