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


def make_reference(out: Path) -> Path:
    """About 6 s of espeak-ng speech at 22050 Hz mono: the voice the synth and serve benchmarks copy."""
    raw = out.with_suffix(".espeak.wav")
    subprocess.run(
        [
            "espeak-ng",
            "-s",
            "140",
            "-w",
            str(raw),
            "This reference clip gives the model a voice to copy, about six seconds of speech.",
        ],
        check=True,
    )
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(raw), "-ac", "1", "-ar", "22050", str(out)],
        check=True,
    )
    raw.unlink()
    return out
