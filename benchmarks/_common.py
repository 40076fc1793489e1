"""What every benchmark prints about the machine it ran on (the figures only mean something beside it)."""
from __future__ import annotations

import os
import platform
from pathlib import Path

__all__ = ["load_average", "load_averages", "machine", "cpu_name"]


def load_average() -> float:
    """The 1-minute load average (NaN where the OS has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def load_averages() -> str:
    """The 1-, 5- and 15-minute load averages, e.g. ``"0.5 0.7 1.4"`` (``"n/a"`` where the OS has none)."""
    return " ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def cpu_name() -> str:
    """The processor's model name, e.g. ``"AMD EPYC 7B13"``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine(device=None) -> str:
    """``"x86_64, 2 cpu cores"``, or the card's name when ``device`` is a CUDA device."""
    if device is not None and getattr(device, "type", device) == "cuda":
        import torch
        return f"{platform.machine()}, {torch.cuda.get_device_name()}"
    return f"{platform.machine()}, {os.cpu_count()} cpu cores"
