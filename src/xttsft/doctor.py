"""``doctor``: a report of what this machine has and the settings it should train with.

The facts and the recommendation come from :mod:`xttsft.hardware` (re-exported here);
the stages use that module directly. :func:`diagnose` adds the environment (torch/CUDA versions, ffmpeg,
  espeak-ng, free disk, cached models, the dataset, the settings) and turns
  everything into ok/warn/fail :class:`Check` rows with a fix each.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from xttsft.hardware import (
    EFFECTIVE_BATCH_SIZE,
    GiB,
    GpuFacts,
    HardwareFacts,
    Recommendation,
    _gpus_from_torch,  # noqa: F401 - tests reach it through doctor
    _nvidia_smi,
    current_recommendation,
    hardware_facts,
    recommend,
)
from xttsft.paths import Workspace

__all__ = [
    "GpuFacts",
    "HardwareFacts",
    "Recommendation",
    "Check",
    "DoctorReport",
    "EFFECTIVE_BATCH_SIZE",
    "XTTS_REPO_ID",
    "hardware_facts",
    "recommend",
    "current_recommendation",
    "diagnose",
]

log = logging.getLogger(__name__)

XTTS_REPO_ID = "coqui/XTTS-v2"
# The files every XTTS-v2 folder must hold (xttsft.model.XTTS_FILES is the owner;
# this copy keeps doctor from importing the model module).
_XTTS_FILES = ("model.pth", "config.json", "vocab.json", "dvae.pth", "mel_stats.pth", "speakers_xtts.pth")

# ------------------------------------------------------------------------ facts: xttsft.hardware
# ------------------------------------------------------------------------ checks

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    """One row of the doctor's table. ``fail`` means training cannot work."""

    name: str
    status: Status
    detail: str
    fix: str = ""


@dataclass
class DoctorReport:
    """Everything ``xttsft doctor`` found."""

    facts: dict[str, Any]
    hardware: HardwareFacts
    recommendation: Recommendation
    checks: list[Check]

    @property
    def ok(self) -> bool:
        """False when something needed for training is missing."""
        return not any(c.status == "fail" for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "facts": {**self.facts, **self.hardware.to_dict()},
            "recommendation": self.recommendation.to_dict(),
            "checks": [asdict(c) for c in self.checks],
        }


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _torch_build() -> tuple[str | None, str | None]:
    """(torch version, CUDA version torch was built with) without importing torch."""
    import importlib.util

    version = _dist_version("torch")
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        spec = None
    cuda = None
    if spec is not None and spec.submodule_search_locations:
        vfile = Path(next(iter(spec.submodule_search_locations))) / "version.py"
        try:
            text = vfile.read_text(encoding="utf-8")
            m = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", text, re.M)
            cuda = m.group(1) if m else None
        except OSError:
            pass
    return version, cuda


def _tool_version(exe: str, args: list[str], pattern: str) -> str | None:
    try:
        proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(pattern, proc.stdout + proc.stderr)
    return m.group(1) if m else "unknown version"


def _driver_version() -> str | None:
    out = _nvidia_smi("driver_version")
    lines = out.strip().splitlines() if out else []
    return lines[0].strip() if lines else None


def _existing_parent(path: Path) -> Path:
    path = path.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _model_module() -> Any:
    """:mod:`xttsft.model` (cheap to import: it keeps torch inside functions), or None."""
    try:
        from xttsft import model  # guarded, not at the top: doctor must run with a broken install
    except Exception as exc:  # noqa: BLE001 - doctor must answer even if the model module is broken
        log.debug("cannot import xttsft.model: %s", exc)
        return None
    return model


def _xtts_files() -> tuple[str, ...]:
    return tuple(getattr(_model_module(), "XTTS_FILES", _XTTS_FILES))


def _xtts_revision() -> str | None:
    """The pinned XTTS-v2 revision train downloads (None: the cache's ``main``)."""
    return getattr(_model_module(), "HF_REVISION", None)


def _xtts_cache() -> tuple[list[str], Path | None]:
    """(missing XTTS-v2 files, their snapshot folder) in the local Hugging Face cache; no network."""
    from huggingface_hub import try_to_load_from_cache

    revision = _xtts_revision()
    missing: list[str] = []
    folder: Path | None = None
    for name in _xtts_files():
        found = try_to_load_from_cache(repo_id=XTTS_REPO_ID, filename=name, revision=revision)
        if isinstance(found, str):
            folder = Path(found).parent
        else:
            missing.append(name)
    return missing, folder


def _cache_dir() -> Path:
    model = _model_module()
    if model is not None and hasattr(model, "cache_dir"):
        return Path(model.cache_dir())
    return Path(os.environ.get("XTTSFT_CACHE_DIR") or Path.home() / ".cache" / "xttsft").expanduser()


def _tiny_model_dir() -> Path | None:
    """The tiny test XTTS in xttsft's cache, if it was built (``xttsft train --base-model tiny`` builds it)."""
    root = _cache_dir()
    if not root.is_dir():
        return None
    model = _model_module()
    version = getattr(model, "TINY_VERSION", None)
    marker = getattr(model, "TINY_MARKER", None)
    if version is not None and marker is not None:
        d = root / f"tiny-xtts-v{version}"
        return d if (d / marker).is_file() else None
    for d in sorted(p for p in root.glob("tiny*") if p.is_dir()):
        if all((d / f).is_file() for f in _xtts_files()):
            return d
    return None


def _count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


#: what one probe found: its checks (rows of doctor's table) and its facts (keys of ``--json``)
Found = tuple[list[Check], dict[str, Any]]


def diagnose(
    workspace: Workspace, dataset_dir: Path | None = None, settings_error: str | None = None, use_lora: bool = True
) -> DoctorReport:
    """Gather the facts, the recommendation and the checks for ``workspace``: one probe per row.

    ``dataset_dir`` is the dataset the settings point at (default: the
    workspace's); ``settings_error`` is the message of invalid settings, shown
    as a failed check.
    """
    hw = hardware_facts()
    rec = recommend(hw, use_lora=use_lora)
    checks: list[Check] = []
    facts: dict[str, Any] = {}
    for found, known in (
        _python(),
        _torch(hw),
        _gpus(hw),
        _memory(hw, use_lora),
        _disk(workspace),
        _ffmpeg(),
        _espeak(),
        _xtts_base(),
        _tiny(),
        _dataset(workspace, dataset_dir),
        _settings(settings_error),
    ):
        checks += found
        facts.update(known)
    facts["workdir"] = str(workspace.root)
    return DoctorReport(facts=facts, hardware=hw, recommendation=rec, checks=checks)


def _python() -> Found:
    py = platform.python_version()
    ok = sys.version_info >= (3, 10)
    return (
        [Check("python", "ok" if ok else "fail", py, "" if ok else "Use Python 3.10-3.13.")],
        {"python": py, "platform": platform.platform()},
    )


def _torch(hw: HardwareFacts) -> Found:
    version, cuda = _torch_build()
    facts = {"torch": version, "torch_cuda": cuda, "nvidia_driver": _driver_version() if hw.gpus else None}
    if version is None:
        return [Check("torch", "fail", "not installed", "pip install -e . (installs torch)")], facts
    if hw.gpus and cuda is None:
        return [
            Check(
                "torch",
                "warn",
                f"{version} (CPU-only build) but a GPU is present",
                "Install a CUDA build of torch: https://pytorch.org/get-started/locally/",
            )
        ], facts
    return [Check("torch", "ok", f"{version} ({f'CUDA {cuda}' if cuda else 'CPU build'})")], facts


def _gpus(hw: HardwareFacts) -> Found:
    if not hw.gpus:
        return [
            Check(
                "gpu",
                "warn",
                "no CUDA GPU found",
                "Training works on CPU but is slow; use a machine with an NVIDIA GPU (8 GB+) "
                "and its driver (nvidia-smi) for a real voice.",
            )
        ], {}
    checks = []
    for g in hw.gpus:
        free = "" if g.free_gib is None else f", {g.free_gib:.1f} GB free"
        cc = f"{g.compute_capability[0]}.{g.compute_capability[1]}"
        detail = f"{g.name}: {g.total_gib:.1f} GB{free}, compute {cc}, bf16 {'yes' if g.bf16 else 'no'}"
        if g.total_gib < 5.5:
            checks.append(
                Check(
                    f"gpu {g.index}",
                    "warn",
                    detail,
                    "XTTS-v2 LoRA training needs about 6 GB of VRAM; "
                    "use a bigger card, or train on the CPU: xttsft train --device cpu.",
                )
            )
        else:
            checks.append(Check(f"gpu {g.index}", "ok", detail))
    return checks, {}


def _memory(hw: HardwareFacts, use_lora: bool) -> Found:
    checks = [Check("cpu", "ok", f"{hw.cpu_count} cores")]
    need = 9.0 if use_lora else 11.0
    if hw.ram_total_gib and hw.ram_total_gib < need and not hw.gpus:
        checks.append(
            Check(
                "ram",
                "warn",
                f"{hw.ram_total_gib:.1f} GB total",
                f"CPU training of XTTS-v2 peaks near {need:.0f} GB; close other programs or add swap.",
            )
        )
    else:
        avail = "" if hw.ram_available_gib is None else f", {hw.ram_available_gib:.1f} GB available"
        checks.append(Check("ram", "ok", f"{hw.ram_total_gib:.1f} GB total{avail}"))
    return checks, {}


def _disk(workspace: Workspace) -> Found:
    at = _existing_parent(workspace.root)
    free_gib = shutil.disk_usage(at).free / GiB
    detail = f"{free_gib:.1f} GB free at {at}"
    facts = {"disk_free_gib": round(free_gib, 2), "disk_path": str(at)}
    if free_gib < 3:
        return [
            Check(
                "disk",
                "fail",
                detail,
                "XTTS-v2 (1.9 GB), the dataset and checkpoints need at least 3 GB; "
                "free space or use --workdir on a bigger disk.",
            )
        ], facts
    if free_gib < 20:
        return [
            Check(
                "disk",
                "warn",
                detail,
                "Full fine-tune checkpoints are ~1.7 GB each; keep 20 GB free (fewer with LoRA).",
            )
        ], facts
    return [Check("disk", "ok", detail)], facts


def _ffmpeg() -> Found:
    exe = shutil.which("ffmpeg")
    version = _tool_version(exe, ["-version"], r"ffmpeg version (\S+)") if exe else None
    if exe:
        return [Check("ffmpeg", "ok", f"{version} ({exe})")], {"ffmpeg": version}
    return [
        Check(
            "ffmpeg",
            "fail",
            "not found on PATH",
            "Install it: sudo apt-get install ffmpeg (macOS: brew install ffmpeg).",
        )
    ], {"ffmpeg": None}


def _espeak() -> Found:
    exe = shutil.which("espeak-ng")
    version = _tool_version(exe, ["--version"], r"eSpeak NG text-to-speech:\s*(\S+)") if exe else None
    if exe:
        return [Check("espeak-ng", "ok", f"{version} (optional: tests and demo)")], {"espeak_ng": version}
    return [
        Check(
            "espeak-ng",
            "warn",
            "not found (optional: only tests and the demo use it)",
            "sudo apt-get install espeak-ng",
        )
    ], {"espeak_ng": None}


def _xtts_base() -> Found:
    try:
        missing, where = _xtts_cache()
    except Exception as exc:  # noqa: BLE001 - huggingface_hub missing or cache unreadable
        return [
            Check(
                "xtts-v2 base",
                "warn",
                f"cannot read the Hugging Face cache: {exc}",
                "pip install -e . (installs huggingface_hub)",
            )
        ], {"xtts_base_cached": False, "xtts_base_dir": None}
    facts = {"xtts_base_cached": not missing, "xtts_base_dir": str(where) if where and not missing else None}
    if not missing:
        return [Check("xtts-v2 base", "ok", f"cached in {where}")], facts
    return [
        Check(
            "xtts-v2 base",
            "warn",
            f"not in the local Hugging Face cache (missing {', '.join(missing)})",
            "`xttsft train` downloads it once (~1.9 GB, needs internet); or pass a local folder: "
            "xttsft train --base-model DIR.",
        )
    ], facts


def _tiny() -> Found:
    tiny = _tiny_model_dir()
    detail = f"cached in {tiny}" if tiny else f"not built yet (built in {_cache_dir()} on first use)"
    return [Check("tiny test model", "ok", detail)], {"tiny_model_cached": tiny is not None}


def _dataset(workspace: Workspace, dataset_dir: Path | None) -> Found:
    ds = Path(dataset_dir) if dataset_dir is not None else workspace.dataset_dir
    meta = ds / "metadata_train.csv"
    n_train = _count_lines(meta) if meta.is_file() else 0
    facts = {"dataset_dir": str(ds), "dataset_exists": bool(n_train), "dataset_train_samples": n_train}
    if n_train:
        val = ds / "metadata_val.csv"
        n_val = _count_lines(val) if val.is_file() else 0
        return [Check("dataset", "ok", f"{ds}: {n_train} train, {n_val} val samples")], facts
    return [
        Check(
            "dataset",
            "warn",
            f"no {meta}" if not meta.is_file() else f"{meta} is empty",
            "Build it: xttsft fetch, segment, transcribe, build (or train on a dataset of your own: "
            "xttsft train --dataset-dir DIR).",
        )
    ], facts


def _settings(error: str | None) -> Found:
    if error:
        return [Check("settings", "fail", error, "Fix the values; `xttsft config` shows their sources.")], {}
    return [Check("settings", "ok", "valid")], {}
