"""What every benchmark shares: the machine it ran on.

Benchmarks run as scripts (``python benchmarks/NAME.py``), so they import this
as ``from _common import machine``.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path


def machine() -> str:
    """``Linux x86_64, <CPU model>, 2 CPUs, <GPU or no GPU>, Python 3.11.7``."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = "no GPU"
    if shutil.which("nvidia-smi"):
        r = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
        gpu = r.stdout.strip() or gpu
    return f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} CPUs, {gpu}, Python {platform.python_version()}"
