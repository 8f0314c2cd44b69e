"""The peak dense-matmul throughput of this machine, for model-FLOPs utilisation (MFU).

MFU is achieved model FLOPs over what the hardware can do. Machines of the same kind differ (two 2-core
CPUs of one cloud type measured 150 and 178 GFLOP/s fp32), so the peak is measured, not assumed: the best
of a few large square matmuls in the training dtype, cached per (device name, threads, dtype) under
``~/.cache/nlp_ssl`` so that a run pays the ~1 s measurement once per machine. ``peak_flops`` in the config
overrides the measurement (e.g. a GPU's data-sheet figure).
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

_CACHE = Path(os.environ.get("NLP_SSL_CACHE", Path.home() / ".cache" / "nlp_ssl")) / "peak_flops.json"


def device_name(device: torch.device) -> str:
    """A name that tells machines apart: the CPU model or GPU name, with the thread count on CPU."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu:{model}:{torch.get_num_threads()} threads"


def measure_peak_flops(device: torch.device, dtype: torch.dtype = torch.float32, size: int = 2048,
                       repeats: int = 5) -> float:
    """Best FLOP/s of ``repeats`` ``size x size`` matmuls (``2 size^3`` FLOPs each) on ``device``."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for index in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if index:  # the first call pays for thread-pool start-up and allocation
            best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def peak_flops(device: torch.device, dtype: torch.dtype = torch.float32, configured: float | None = None) -> float:
    """``configured`` if given, else the cached or freshly measured peak of this machine."""
    if configured:
        return configured
    key = f"{device_name(device)}:{dtype}"
    try:
        cache = json.loads(_CACHE.read_text())
    except (OSError, ValueError):
        cache = {}
    if isinstance(cache, dict) and isinstance(cache.get(key), (int, float)):
        return float(cache[key])
    value = measure_peak_flops(device, dtype)
    try:
        _CACHE.parent.mkdir(parents=True, exist_ok=True)
        cache = cache if isinstance(cache, dict) else {}
        cache[key] = value
        tmp = _CACHE.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(cache, indent=2))
        os.replace(tmp, _CACHE)
    except OSError:
        pass  # a read-only home only costs a re-measurement next time
    return value
