"""Choosing the device, precision and tile size."""

from __future__ import annotations

import ctypes
import functools
import math
import os
import platform
import sys

import torch

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` -> first CUDA GPU, else Apple MPS, else CPU. Unavailable devices are refused."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device: unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: CUDA is not available in this PyTorch build or machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {name!r}: MPS is not available on this machine")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device: unsupported device type {dev.type!r}")
    return dev


def _onednn_reports(probe: str) -> bool:
    try:
        return bool(getattr(torch.ops.mkldnn, probe)())
    except (AttributeError, RuntimeError):
        return False


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True where oneDNN has native bf16 kernels (AVX512-BF16 or AMX), where bf16 beats fp32."""
    return _onednn_reports("_is_mkldnn_bf16_supported")


@functools.cache
def cpu_has_fast_fp16() -> bool:
    """True where oneDNN has native fp16 kernels (AVX512-FP16 or AMX-FP16)."""
    return _onednn_reports("_is_mkldnn_fp16_supported")


# glibc's <malloc.h> parameter numbers.
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
# Free memory at the top of the heap kept for reuse rather than returned to the system.
KEEP_FREED_BYTES = 1 << 30
ALLOCATOR_ENV = "ESRFORGE_CPU_ALLOCATOR"


def tune_cpu_allocator() -> bool:
    """Make glibc's malloc keep freed memory for reuse; True if applied.

    By default glibc maps each block above its mmap threshold (which rises to at most 32 MiB)
    freshly and unmaps it on free, so each large tensor (a concatenated feature map, an upsampled
    activation) pays a page fault per 4 KiB page, every tile and every training step: on a
    2-core AVX2 VM a plain RRDBNet x4 forward took 30-32 s with that and 21-23 s without
    (docs/benchmarks.md). Serving such blocks from the heap, and trimming it only past 1 GiB of
    free top, reuses the same pages instead.
    The process then keeps its peak memory until it exits; `ESRFORGE_CPU_ALLOCATOR=system`
    leaves malloc alone. Process-wide, so the CLI and training call it, not the library on
    import. Repeating it is harmless.
    """
    if os.environ.get(ALLOCATOR_ENV, "").strip().lower() == "system":
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False  # musl, macOS and Windows allocators take no such options
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the loaded allocator's, if one was preloaded
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES))


def slow_precision_note(dtype: torch.dtype | None, device: torch.device) -> str | None:
    """Why an explicitly chosen half precision will crawl on this device, or None.

    Without the CPU units oneDNN falls back to a generic convolution: a 3x3 conv ran 10x slower
    in bf16 or fp16 than in fp32 on an AVX2 CPU. `auto` never picks such a precision.
    """
    if device.type != "cpu" or dtype not in (torch.bfloat16, torch.float16):
        return None
    if dtype == torch.bfloat16 and not cpu_has_fast_bf16():
        units = "bf16 units (AVX512-BF16 or AMX)"
    elif dtype == torch.float16 and not cpu_has_fast_fp16():
        units = "fp16 units (AVX512-FP16 or AMX-FP16)"
    else:
        return None
    name = "bf16" if dtype == torch.bfloat16 else "fp16"
    return f"precision {name}: this CPU has no {units}, so {name} runs many times slower than fp32 here; use auto or fp32"


def resolve_precision(name: str, device: torch.device, *, high_bit_depth: bool = False) -> torch.dtype:
    """`auto`: fp16 on CUDA/MPS, bf16 on CPUs with bf16 units, else fp32.

    16-bit sources run in fp32 under `auto`: half types keep 8-11 significant bits, which would
    throw away the precision the user kept by saving 16-bit files.
    """
    if name != "auto":
        if name not in PRECISIONS:
            raise ValueError(f"precision: unknown {name!r}; use auto, fp32, fp16 or bf16")
        return PRECISIONS[name]
    if high_bit_depth:
        return torch.float32
    if device.type in ("cuda", "mps"):
        return torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def free_memory_bytes(device: torch.device) -> int:
    """Memory the tiler may plan with: free GPU memory, or available RAM on CPU."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    room = cgroup_room_bytes()
    if room is not None:  # in a container, /proc/meminfo shows the host's memory, not the limit
        avail = room if avail is None else min(avail, room)
    return 4 << 30 if avail is None else avail  # unknown platform: plan with 4 GiB, halve after OOM


CGROUP_FILES = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),  # v1
)


def cgroup_room_bytes() -> int | None:
    """Memory left under this process's cgroup limit (a container's), or None without a limit.

    Past it the kernel kills the process outright, so no MemoryError would let the tiler halve."""
    for limit_file, usage_file in CGROUP_FILES:
        try:
            with open(limit_file) as f:
                limit = f.read().strip()
            with open(usage_file) as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or not limit.isdigit() or int(limit) >= 1 << 60:  # no limit (v1 writes a huge number)
            return None
        return max(0, int(limit) - usage)
    return None


# Past these sizes a bigger tile buys little. On CPU the 16 px margins are what small tiles cost:
# on a 1400x1000 photo the bundled model took 1.26x the whole-image time with 256 px tiles and
# 1.11x with 512 px ones (benchmarks/bench_cpu_tile.py, docs/benchmarks.md).
MAX_AUTO_TILE = {"cpu": 512, "mps": 512, "cuda": 1024}


def auto_tile(bytes_per_px: float, device: torch.device, margin: int, multiple_of: int = 1) -> int:
    """Largest square tile (LR pixels) whose working set fits half the free memory."""
    budget = free_memory_bytes(device) * (0.7 if device.type == "cuda" else 0.5)
    side = int(math.sqrt(max(budget, 1) / max(bytes_per_px, 1))) - 2 * margin
    side = min(side, MAX_AUTO_TILE.get(device.type, 512) * multiple_of)  # the network's own pixels
    step = 16 * multiple_of
    return max(step, side // step * step)
