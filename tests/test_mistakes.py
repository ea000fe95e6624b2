"""Nothing the user made is deleted, and every mistake gets a message (issue 18).

Each test reproduces a case of the issue's adversarial round with real processes, files,
mounts and locks; each failed on the code before the fix."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import tmpfs
from xttsft.paths import Workspace

XTTSFT = [sys.executable, "-m", "xttsft"]


def _xttsft(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*XTTSFT, *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def _flat(res: subprocess.CompletedProcess) -> str:
    return " ".join((res.stdout + res.stderr).split())


@pytest.fixture
def transcribed(workspace: Workspace, speak, tmp_path_factory) -> Workspace:
    """Clips, a manifest and transcripts as segment and transcribe leave them (test_build's inputs)."""
    from test_build import make_inputs

    bank = tmp_path_factory.mktemp("bank")
    clips = [speak(f"Sentence number {i} of the mistakes test.", bank / f"s{i}.wav", rate=170) for i in range(5)]
    workspace.ensure()
    make_inputs(workspace, clips)
    return workspace


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "disk", "200M") as mnt:
        yield mnt


# ------------------------------------------------------------------ data loss
@pytest.mark.parametrize(("how", "name"), [("flag", "raw"), ("env", "processed"), ("flag", "RAW")])
def test_a_dataset_name_cannot_be_a_pipeline_folder(cli, workspace: Workspace, how: str, name: str) -> None:
    workspace.ensure()
    recording = workspace.raw_dir / "talk.wav"
    recording.write_bytes(b"RIFF only copy")
    transcript = workspace.transcripts_file
    transcript.write_text("{}\n")
    res = cli("build", "--dataset-name", name) if how == "flag" else cli("build", env={"BUILD_DATASET_NAME": name})
    out = " ".join(res.output.split())
    assert res.exit_code == 1 and "cannot be used" in out and "which the dataset would replace" in out, out
    assert recording.read_bytes() == b"RIFF only copy" and transcript.read_text() == "{}\n"


def test_build_never_replaces_a_folder_it_did_not_write(cli, transcribed: Workspace) -> None:
    mine = transcribed.dataset_dir
    mine.mkdir(parents=True)
    (mine / "my_notes.txt").write_text("mine")
    res = cli("build", "--min-samples", "1")
    out = " ".join(res.output.split())
    assert res.exit_code == 1 and "was not written by `xttsft build`" in out and str(mine) in out, out
    assert (mine / "my_notes.txt").read_text() == "mine"
    (mine / "my_notes.txt").unlink()  # an empty folder is fine, and so is build's own dataset afterwards
    assert cli("build", "--min-samples", "1").exit_code == 0
    assert cli("build", "--min-samples", "1", "--val-fraction", "0.3").exit_code == 0


def test_a_symlinked_dataset_is_rebuilt_beside_its_target(cli, transcribed: Workspace, mounted: Path) -> None:
    target = mounted / "voice-data"
    target.mkdir()
    link = transcribed.dataset_dir
    link.symlink_to(target, target_is_directory=True)
    for val in ("0.1", "0.3"):  # a first build, then one that replaces it
        res = cli("build", "--min-samples", "1", "--val-fraction", val)
        assert res.exit_code == 0, res.output
        assert link.is_symlink() and link.resolve() == target.resolve()
        assert (target / "stats.json").is_file() and len(list((target / "wavs").glob("*.wav"))) == 5
        assert os.stat(target).st_dev == os.stat(mounted).st_dev, "the data stays on its disk"
    leftovers = [p.name for p in [*transcribed.data_dir.iterdir(), *mounted.iterdir()] if p.name.startswith(".")]
    assert leftovers == []


# ------------------------------------------------------------------ messages
def test_quiet_draws_no_progress_bar(cli, transcribed: Workspace) -> None:
    loud = cli("build", "--min-samples", "1")
    assert loud.exit_code == 0 and " eta " in loud.output  # the bar's ETA column
    quiet = cli("-q", "build", "--min-samples", "1", "--val-fraction", "0.3")
    assert quiet.exit_code == 0 and " eta " not in quiet.output, quiet.output


def test_verbose_shows_the_traceback_of_an_unexpected_error(capsys) -> None:
    import typer

    from xttsft.cli._common import AppState, handle_errors, set_state

    @handle_errors
    def broken() -> None:
        raise RuntimeError("a bug of ours")

    for verbose in (False, True):
        set_state(AppState(verbose=verbose))
        with pytest.raises(typer.Exit):
            broken()
        err = capsys.readouterr().err
        assert "Unexpected error" in err and "a bug of ours" in err
        assert ("Traceback" in err) is verbose, err
    set_state(AppState())


def test_a_read_only_workspace_is_named_not_a_bug(mounted: Path) -> None:
    ws = Workspace(mounted / "ws")
    (ws.root / "train").mkdir(parents=True)
    subprocess.run(["mount", "-o", "remount,ro", str(mounted)], check=True)
    res = _xttsft("--workdir", str(ws.root), "build")
    out = _flat(res)
    assert res.returncode == 1 and "read-only" in out and str(ws.root) in out, out
    assert "Unexpected error" not in out and "Traceback" not in out


def test_synth_checks_its_output_before_loading_a_model(cli, workspace: Workspace, tmp_path: Path) -> None:
    folder = tmp_path / "already-a-folder"
    folder.mkdir()
    a_file = tmp_path / "a-file.txt"
    a_file.write_text("x")
    # no model exists in this workspace: an output check that waited for the model would say that instead
    for out, says in ((folder, "is a folder"), (a_file / "x.wav", "is a file, not a folder")):
        res = cli("synth", "Olá.", "--model", "no-such-run", "--out", str(out))
        text = " ".join(res.output.split())
        assert res.exit_code == 1 and says in text and "no-such-run" not in text, text


def test_build_waits_for_a_running_transcription(transcribed: Workspace) -> None:
    lock = transcribed.locks_dir / "transcribe.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import time\nfrom pathlib import Path\nfrom xttsft.locks import hold\n"
                f"with hold(Path({str(lock)!r}), 'x'):\n    print('held', flush=True)\n    time.sleep(600)\n"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        res = _xttsft("--workdir", str(transcribed.root), "build", "--min-samples", "1")
        out = _flat(res)
        assert res.returncode == 1 and "transcribe is running" in out and f"pid {holder.pid}" in out, out
        assert not transcribed.dataset_dir.exists()
    finally:
        holder.kill()
        holder.wait()
    assert _xttsft("--workdir", str(transcribed.root), "build", "--min-samples", "1").returncode == 0


def test_a_bad_flag_value_is_a_user_error_with_exit_1(cli) -> None:
    res = cli("build", "--val-fraction", "abc")
    assert res.exit_code == 1 and "--val-fraction" in res.output
    assert cli("no-such-command").exit_code == 1


def test_own_datasets_drop_silent_audio_and_text_without_words(tmp_path: Path, speak) -> None:
    import numpy as np

    from xttsft.audio import write_wav
    from xttsft.data.datasets import inspect_samples, read_dataset

    d = tmp_path / "mine"
    rows = []
    for i, text in enumerate(["Good morning to you.", "The cat sat on the mat.", "We like green apples."]):
        speak(text, d / "wavs" / f"ok_{i}.wav", rate=170)
        rows.append(f"ok_{i}|{text}")
    write_wav(d / "wavs" / "silent.wav", np.zeros(22050 * 3, dtype=np.float32), 22050)
    rows.append("silent|A sentence spoken over nothing.")
    speak("Some words here.", d / "wavs" / "dots.wav", rate=170)
    rows.append("dots|... !?")
    (d / "metadata.csv").write_text("\n".join(rows) + "\n")
    seen = inspect_samples(read_dataset(d, "en"), None, 22050 * 12, 200)
    kept = {s.id for s in seen.train + seen.val}
    reasons = {where.split(":")[-1].strip(): why for why, wheres in seen.dropped.items() for where in wheres}
    assert kept == {"ok_0", "ok_1", "ok_2"}, seen.dropped
    assert "silent" in reasons["silent"] and "punctuation" in reasons["dots"], reasons


def test_count_charts_have_whole_number_ticks(tmp_path: Path) -> None:
    from xttsft.plots import figure, histogram

    fig = figure()
    ax = fig.add_subplot()
    histogram(
        ax,
        [6.1, 7.3, 9.0],
        limit=12.0,
        limit_label="limit",
        xlabel="duration (s)",
        ylabel="clips",
        title="3 clips",
        value_range=(0.0, 15.0),
    )
    fig.canvas.draw()
    ticks = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_user_text_is_printed_literally(cli, workspace: Workspace, speak) -> None:
    """A clip id 'zero' between colons printed as an emoji, and '[b]' in a name vanished as markup."""
    workspace.ensure()
    name = ":zero: [b]talk"
    speak(
        "Good morning. This is a short recording for the test of names. It has three sentences.",
        workspace.raw_dir / f"{name}.wav",
        rate=170,
    )
    res = cli("segment")
    assert res.exit_code == 0, res.output
    assert f"{name}.wav" in res.output and "0️⃣" not in res.output and "\N{KEYCAP TEN}" not in res.output


def test_paths_stay_whole_at_80_columns(cli, workspace: Workspace) -> None:
    deep = workspace.root / ("a-rather-long-folder-name-for-a-workspace-" * 2) / "dataset"
    res = cli("build", "--check", str(deep), env={"COLUMNS": "80"})
    assert res.exit_code == 1 and str(deep) in res.output, res.output


def test_config_keeps_every_variable_name_whole_at_80_columns(cli) -> None:
    from xttsft.settings import SECTIONS

    res = cli("config", env={"COLUMNS": "80"})
    assert res.exit_code == 0
    for section in SECTIONS.values():
        for name in section.model_fields:
            assert section.env_name(name) in res.output, name
    assert "…" not in res.output
