"""The workspace: every path a stage reads or writes, in one place.

The layout follows the guide this project comes from::

    <workdir>/
      xttsft.toml                      optional config file
      .env                             optional settings (also train/.env)
      logs/info.log, logs/error.log
      train/data/raw/                  fetch: downloaded or imported audio
      train/data/processed/segments/   segment: 22050 Hz mono clips + manifest.jsonl
      train/data/processed/screen/     screen: screen.jsonl, stats.json, speakers.png, dnsmos.png
      train/data/processed/transcriptions/   transcribe: transcripts.jsonl
      train/data/processed/review/     review: review.jsonl (edits made in the review page)
      train/data/<dataset_name>/       build: LJSpeech dataset
      train/checkpoints/<run>/         train: checkpoints, best model, settings
      train/runs/<run>/                train: TensorBoard event files
      train/exports/<run>/             export: merged XTTS-v2 model folder
      outputs/                         synth and eval audio
      .locks/                          one lock per stage output and per run (see locks.py)

No other module builds these paths by hand: they ask a :class:`Workspace`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from xttsft.errors import InputError

__all__ = ["Workspace", "RunPaths", "DEFAULT_DATASET_NAME", "check_name"]

#: a name that becomes one folder: no separator, no leading dot (hidden) or dash (an option), no control character
_BAD_NAME = re.compile(r"[/\\\x00-\x1f]|^[.\-]|^\s|\s$")
MAX_NAME_CHARS = 100


def name_problem(value: str) -> str | None:
    """Why ``value`` cannot be a folder name inside the workspace, or ``None`` when it can."""
    if not value:
        return "it is empty"
    if len(value) > MAX_NAME_CHARS:
        return f"it is longer than {MAX_NAME_CHARS} characters"
    if _BAD_NAME.search(value):
        return (
            "it must be a plain folder name: no '/' or '\\', no leading '.' or '-', no leading or trailing "
            "space, no control character"
        )
    return None


def check_name(value: str, what: str, reserved: dict[str, str] | None = None) -> str:
    """``value`` if it is a plain folder name, else :class:`InputError` naming ``what`` (e.g. ``--run-name``).

    Every name that becomes a path (run, dataset, export) passes here, so none can point
    outside the workspace (``../x``, ``/abs``) or hide itself (``.x``). ``reserved`` maps the
    names of folders that another stage owns in the same parent to what they hold: a dataset
    called ``raw`` would have replaced the downloaded recordings."""
    problem = name_problem(value)
    owner = (reserved or {}).get(value.strip().casefold()) if problem is None else None
    if owner is not None:
        problem = f"that folder holds {owner}, which the dataset would replace"
    if problem is not None:
        raise InputError(
            f"{what} {value!r} cannot be used: {problem}.",
            hint="Use letters, digits, '-', '_' and '.', e.g. my-voice-v2.",
        )
    return value


DEFAULT_DATASET_NAME = "MyTTSDataset"


@dataclass(frozen=True)
class RunPaths:
    """The files of one run folder (``train/checkpoints/<run>/``); only this class spells them."""

    RESUME_STATE: ClassVar[str] = "resume_state"

    root: Path

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def settings_json(self) -> Path:
        return self.root / "settings.json"

    @property
    def best_model(self) -> Path:
        return self.root / "best_model"

    @property
    def resume_state(self) -> Path:
        """The newest training state saved by time or steps (TRAIN_SAVE_EVERY_N_MINUTES / _STEPS):
        one folder, replaced each time, apart from the user's ``checkpoint_epoch_N``."""
        return self.root / self.RESUME_STATE

    @property
    def loss_curve(self) -> Path:
        return self.root / "loss_curve.png"

    @staticmethod
    def checkpoint_name(epoch: int, step: int | None = None) -> str:
        """``checkpoint_epoch_N`` (end of epoch N) or ``checkpoint_epoch_N_step_S`` (stopped inside epoch N+1)."""
        return f"checkpoint_epoch_{epoch}" + (f"_step_{step}" if step is not None else "")

    @staticmethod
    def meta(checkpoint: Path) -> Path:
        """A checkpoint's ``meta.json``, written last: a folder with it is complete."""
        return Path(checkpoint) / "meta.json"


@dataclass(frozen=True)
class Workspace:
    """Paths of one xttsft workspace rooted at ``root``."""

    root: Path
    dataset_name: str = DEFAULT_DATASET_NAME

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser().resolve())

    # -- configuration -------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.root / "xttsft.toml"

    @property
    def env_files(self) -> tuple[Path, ...]:
        """``.env`` files, lowest precedence first: ``train/.env`` then ``.env``."""
        return (self.train_dir / ".env", self.root / ".env")

    # -- logs ----------------------------------------------------------
    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def info_log(self) -> Path:
        return self.logs_dir / "info.log"

    @property
    def error_log(self) -> Path:
        return self.logs_dir / "error.log"

    # -- data ----------------------------------------------------------
    @property
    def train_dir(self) -> Path:
        return self.root / "train"

    @property
    def data_dir(self) -> Path:
        return self.train_dir / "data"

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "raw"

    @property
    def processed_dir(self) -> Path:
        return self.data_dir / "processed"

    @property
    def segments_dir(self) -> Path:
        return self.processed_dir / "segments"

    @property
    def segments_manifest(self) -> Path:
        return self.segments_dir / "manifest.jsonl"

    @property
    def segment_sources_file(self) -> Path:
        """One record per segmented source: content hash, settings hash, status, clip ids."""
        return self.segments_dir / "sources.jsonl"

    @property
    def screen_dir(self) -> Path:
        """``screen``: one decision per clip, the speakers found, the plots."""
        return self.processed_dir / "screen"

    @property
    def screen_file(self) -> Path:
        return self.screen_dir / "screen.jsonl"

    @property
    def screen_stats(self) -> Path:
        return self.screen_dir / "stats.json"

    @property
    def screen_features_dir(self) -> Path:
        """Cached per-clip measures (speaker embeddings, DNSMOS, fingerprints), keyed by the clip's content."""
        return self.screen_dir / "features"

    @property
    def download_archive(self) -> Path:
        """yt-dlp download archive: ids already fetched, so re-runs skip them."""
        return self.raw_dir / ".download-archive.txt"

    @property
    def transcriptions_dir(self) -> Path:
        return self.processed_dir / "transcriptions"

    @property
    def transcripts_file(self) -> Path:
        return self.transcriptions_dir / "transcripts.jsonl"

    @property
    def review_dir(self) -> Path:
        """``review``: what a person decided per clip (never the transcripts or the screen's files)."""
        return self.processed_dir / "review"

    @property
    def review_file(self) -> Path:
        return self.review_dir / "review.jsonl"

    @property
    def dataset_dir(self) -> Path:
        return self.data_dir / check_name(self.dataset_name, "The dataset name", reserved=self.data_owned)

    @property
    def data_owned(self) -> dict[str, str]:
        """The folders of ``train/data/`` that stages other than ``build`` own, and what they hold."""
        return {
            self.raw_dir.name: "the fetched recordings (xttsft fetch)",
            self.processed_dir.name: "the clips, screen and transcripts (segment, screen, transcribe)",
        }

    # -- training ------------------------------------------------------
    @property
    def checkpoints_dir(self) -> Path:
        return self.train_dir / "checkpoints"

    def run_dir(self, run: str) -> Path:
        """Checkpoints, best model and saved settings of one training run."""
        return self.checkpoints_dir / check_name(run, "The run name")

    def run(self, run: str) -> RunPaths:
        """The files of one training run's folder."""
        return RunPaths(self.run_dir(run))

    @property
    def tensorboard_dir(self) -> Path:
        return self.train_dir / "runs"

    def tensorboard_run_dir(self, run: str) -> Path:
        return self.tensorboard_dir / check_name(run, "The run name")

    @property
    def exports_dir(self) -> Path:
        return self.train_dir / "exports"

    def export_dir(self, run: str) -> Path:
        return self.exports_dir / check_name(run, "The export name")

    @property
    def outputs_dir(self) -> Path:
        return self.root / "outputs"

    @property
    def synth_dir(self) -> Path:
        """Default folder of ``xttsft synth`` outputs."""
        return self.outputs_dir / "synth"

    def eval_dir(self, run: str) -> Path:
        """``xttsft eval`` of one run: eval.json and the audio of every sentence."""
        return self.outputs_dir / "eval" / check_name(run, "The run name")

    @property
    def locks_dir(self) -> Path:
        """Lock files: one per stage output and per run (``locks.hold``)."""
        return self.root / ".locks"

    @property
    def conditioning_cache_dir(self) -> Path:
        """Cached XTTS conditioning latents, one safetensors file per model + references."""
        return self.root / ".cache" / "conditioning"

    @property
    def state_file(self) -> Path:
        """Stage records of ``run-all`` (what ran, with which inputs and settings)."""
        return self.root / ".xttsft-state.json"

    def latest_run(self) -> str | None:
        """Name of the most recently modified run under ``checkpoints/``, if any."""
        if not self.checkpoints_dir.is_dir():
            return None
        runs = [p for p in self.checkpoints_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if not runs:
            return None
        return max(runs, key=lambda p: p.stat().st_mtime).name

    def ensure(self) -> Workspace:
        """Create the stage folders (idempotent) and return ``self``."""
        for d in (
            self.logs_dir,
            self.raw_dir,
            self.segments_dir,
            self.screen_dir,
            self.transcriptions_dir,
            self.checkpoints_dir,
            self.tensorboard_dir,
        ):
            d.mkdir(parents=True, exist_ok=True)
        return self
