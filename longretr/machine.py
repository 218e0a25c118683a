"""What a measurement ran on: printed and stored beside every benchmark, evaluation and training card."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def describe() -> dict:
    import torch

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    lines = cpuinfo.splitlines()
    cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), platform.processor())
    flags = next((ln for ln in lines if ln.startswith("flags")), "").split()
    try:
        mem = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        mem = None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    cores = os.cpu_count()
    return {
        "summary": f"{cpu or platform.machine()}, {cores} cores" + (f", GPU {gpu}" if gpu else ", no GPU"),
        "host": platform.node(), "cpu": cpu, "cores": cores, "memory_gib": mem, "gpu": gpu,
        "native_bf16": [f for f in ("avx512_bf16", "amx_bf16") if f in flags],
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "load_average": load_average(),
    }
