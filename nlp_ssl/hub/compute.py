"""What a run cost: the hardware it ran on and the steps, items and time it took, for model cards."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux, ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, which containers and schedulers restrict)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def describe_hardware() -> str:
    """One line: GPU name and count if any, else the CPU model and core count; plus the process count.

    The process count comes from ``WORLD_SIZE``, which ``accelerate launch`` / ``torchrun`` set.
    """
    gpus: list[str] = []
    try:
        import torch

        if torch.cuda.is_available():
            gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            gpus = ["Apple MPS"]
    except Exception:  # a broken driver must not cost the user the model card
        gpus = []
    if gpus:
        names = sorted(set(gpus))
        text = ", ".join(f"{gpus.count(n)} x {n}" for n in names)
    else:
        text = f"CPU only: {cpu_model()}, {usable_cores()} cores"
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1:
        text += f"; {world} processes"
    return text


def read_trainer_state(folder: Path) -> dict[str, Any]:
    """``folder/trainer_state.json`` (written by the engine's export) or ``{}``."""
    path = Path(folder) / "trainer_state.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def count_parameters(folder: Path) -> int | None:
    """Parameters stored in ``folder/*.safetensors`` (read from the file headers, no tensor is loaded).

    Tied weights saved once are counted once, as in the file.
    """
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    try:
        from safetensors import safe_open

        total = 0
        for path in files:
            with safe_open(str(path), framework="np") as handle:
                for name in handle.keys():
                    shape = handle.get_slice(name).get_shape()
                    size = 1
                    for dim in shape:
                        size *= int(dim)
                    total += size
        return total
    except Exception:  # an unreadable header only costs the card one line
        return None


def format_duration(seconds: float) -> str:
    """``3725.0`` -> ``1 h 02 min 05 s``; short times keep a decimal."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min {secs:02d} s"
    return f"{minutes} min {secs:02d} s"
