"""The voices a server speaks with, by name, and their conditioning latents.

* The model's own voice is the default: a run's reference clips (picked from its dataset as
  ``synth`` picks them), an export's ``reference*.wav`` or its entry in ``speakers_xtts.pth``, or,
  for ``--model base``, the speakers stored in the base model's ``speakers_xtts.pth``.
* A ``--voices`` folder adds one voice per ``NAME.wav`` or per folder ``NAME/`` of audio files,
  with an optional ``NAME/voice.json`` (``{"language": "pt", "description": "..."}``).
* OpenAI's voice names (``alloy``, ``nova``, ...) speak with the default voice unless the alias
  map names another voice; ``default`` always means the default voice.
* A request names a voice; the name is looked up in this catalog and never becomes a path.

:class:`LatentCache` keeps each voice's latents in memory, keyed by the size and modification
time of its files; a changed file is hashed again and its latents come from the on-disk cache of
``synth.conditioning`` (keyed by the model's identity and the audio's SHA-256) or are computed.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xttsft.errors import InputError
from xttsft.settings import parse_language
from xttsft.voice.synth import load_reference

__all__ = [
    "OPENAI_VOICES",
    "AUDIO_SUFFIXES",
    "VoiceEntry",
    "Latents",
    "UnknownVoiceError",
    "VoiceCatalog",
    "LatentCache",
    "read_voices_dir",
    "check_voice_name",
]

log = logging.getLogger(__name__)

#: The built-in voice names of OpenAI's speech API (openai-python 3.x).
OPENAI_VOICES: tuple[str, ...] = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "onyx",
    "nova",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".mp3", ".ogg"})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}")


def check_voice_name(name: str) -> str | None:
    """What is wrong with ``name`` as a voice name, or None."""
    if not _NAME.fullmatch(name) or name.endswith((".", " ")):
        return (
            f"{name!r} is not a voice name: use 1-64 letters, digits, spaces, dots, dashes or underscores, "
            "starting with a letter or digit"
        )
    if name.casefold() == "default":
        return "'default' is reserved: it always names the default voice"
    return None


@dataclass(frozen=True)
class VoiceEntry:
    """One voice: reference audio files, or latents stored with the model."""

    name: str
    description: str = ""
    language: str | None = None
    files: tuple[Path, ...] = ()
    stored: Any = field(default=None, compare=False, repr=False)  # (gpt_cond_latent, speaker_embedding)
    origin: str = "folder"  # "model" (the model's own voice), "folder" (--voices) or "speakers" (speakers_xtts.pth)

    def listing(self) -> dict[str, Any]:
        """The voice as /v1/audio/voices lists it (Open WebUI reads id and name)."""
        return {"id": self.name, "name": self.name, "language": self.language, "description": self.description}


@dataclass(frozen=True)
class Latents:
    """A voice's conditioning, and where it came from: ``memory``, ``disk`` or ``computed``."""

    value: Any
    source: str


class UnknownVoiceError(InputError):
    """The request names no voice of this server."""


def _voice_json(folder: Path, problems: list[str]) -> dict[str, Any]:
    path = folder / "voice.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"{path}: not JSON ({exc})")
        return {}
    if not isinstance(data, dict) or set(data) - {"language", "description"}:
        problems.append(f"{path}: expected an object with only 'language' and 'description'")
        return {}
    if data.get("language") is not None:
        try:
            data["language"] = parse_language(str(data["language"]))
        except ValueError as exc:
            problems.append(f"{path}: {exc}")
            data["language"] = None
    return data


def _folder_voice(entry: Path, problems: list[str]) -> VoiceEntry | None:
    if entry.is_dir():
        files = tuple(sorted(p for p in entry.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES))
        if not files:
            problems.append(f"{entry}: no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
            return None
        meta = _voice_json(entry, problems)
        return VoiceEntry(entry.name, str(meta.get("description") or ""), meta.get("language"), files)
    if entry.suffix.lower() in AUDIO_SUFFIXES:
        return VoiceEntry(entry.stem, "", None, (entry,))
    return None


def read_voices_dir(folder: Path) -> list[VoiceEntry]:
    """The voices of a ``--voices`` folder: ``NAME.wav`` or ``NAME/*.wav`` (+ ``voice.json``).

    Every file is read once here (missing, silent, too short or not audio is an error), and all
    problems are reported together in one InputError."""

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(
            f"Voices folder {folder} does not exist.",
            hint="Pass a folder with one NAME.wav, or one NAME/ folder of wavs, per voice.",
        )
    problems: list[str] = []
    voices: dict[str, VoiceEntry] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        voice = _folder_voice(entry, problems)
        if voice is None:
            continue
        why = check_voice_name(voice.name)
        if why is None and voice.name.casefold() in voices:
            why = f"two voices named {voice.name!r} ({entry.name} and another file or folder)"
        if why is not None:
            problems.append(f"{entry}: {why}")
            continue
        for f in voice.files:
            try:
                load_reference(f)
            except InputError as exc:
                problems.append(exc.message)
        voices[voice.name.casefold()] = voice
    if problems:
        raise InputError(
            "The voices folder has problems:\n  " + "\n  ".join(problems),
            hint="Fix or remove these files; each voice needs 3-12 s of clean speech.",
        )
    if not voices:
        raise InputError(
            f"The voices folder {folder} holds no voices.", hint="Put NAME.wav files, or NAME/ folders of wavs, in it."
        )
    return list(voices.values())


class VoiceCatalog:
    """Voices by name, the default voice, and the aliases of OpenAI's names."""

    def __init__(self, voices: Iterable[VoiceEntry], default: str, aliases: Mapping[str, str] | None = None) -> None:
        self._voices: dict[str, VoiceEntry] = {}
        for v in voices:
            self._voices.setdefault(v.name.casefold(), v)
        if default.casefold() not in self._voices:
            raise InputError(
                f"The default voice {default!r} is not among the voices.",
                hint="Name one of: " + ", ".join(self.names()),
            )
        self.default = self._voices[default.casefold()]
        self._aliases: dict[str, VoiceEntry] = {}
        bad = [
            f"{alias} -> {target}" for alias, target in (aliases or {}).items() if target.casefold() not in self._voices
        ]
        if bad:
            raise InputError(
                "Voice aliases name voices this server does not have: " + ", ".join(bad) + ".",
                hint="Aliases map a name to one of: " + ", ".join(self.names()) + ".",
            )
        for alias, target in (aliases or {}).items():
            self._aliases[alias.casefold()] = self._voices[target.casefold()]

    def __iter__(self):
        return iter(self._voices.values())

    def __len__(self) -> int:
        return len(self._voices)

    def names(self) -> list[str]:
        return [v.name for v in self._voices.values()]

    def resolve(self, requested: str) -> VoiceEntry:
        """The voice a request names: a voice, ``default``, an alias, or an OpenAI name (the default)."""
        key = str(requested).strip().casefold()
        if key in self._voices:
            return self._voices[key]
        if key in self._aliases:
            return self._aliases[key]
        if key == "default" or key in OPENAI_VOICES:
            return self.default
        shown = str(requested)[:80]
        raise UnknownVoiceError(
            f"Voice {shown!r} does not exist on this server.",
            hint="Voices: " + ", ".join(self.names()) + f" (and default; {', '.join(OPENAI_VOICES[:3])}, ... speak "
            "with the default voice). GET /v1/audio/voices lists them.",
        )

    def aliases(self) -> dict[str, str]:
        """Every alias, OpenAI's names included, with the voice it speaks with."""
        out = {name: self.default.name for name in OPENAI_VOICES if name not in self._voices}
        out.update({alias: v.name for alias, v in self._aliases.items()})
        return out


def _signature(files: tuple[Path, ...]) -> tuple[tuple[str, int, int], ...] | None:
    sig = []
    for f in files:
        try:
            st = f.stat()
        except OSError:
            return None
        sig.append((str(f), st.st_size, st.st_mtime_ns))
    return tuple(sig)


class LatentCache:
    """Latents of each voice in memory, checked against its files' size and mtime on every use.

    ``compute(voice)`` returns ``(latents, from_disk)``; it runs on the model's thread. A voice with
    stored latents (``speakers_xtts.pth``) never computes."""

    def __init__(self, compute: Callable[[VoiceEntry], tuple[Any, bool]]) -> None:
        self._compute = compute
        self._entries: dict[str, tuple[Any, Any]] = {}
        self._lock = threading.Lock()

    def get(self, voice: VoiceEntry) -> Latents:
        if voice.stored is not None:
            return Latents(voice.stored, "memory")
        sig = _signature(voice.files)
        with self._lock:
            held = self._entries.get(voice.name)
        if held is not None and sig is not None and held[0] == sig:
            return Latents(held[1], "memory")
        value, from_disk = self._compute(voice)
        if sig is not None:
            with self._lock:
                self._entries[voice.name] = (sig, value)
        if held is not None:
            log.info(
                "Voice %s changed on disk: latents %s.",
                voice.name,
                "read from the cache" if from_disk else "computed again",
            )
        return Latents(value, "disk" if from_disk else "computed")
