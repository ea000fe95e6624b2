"""Every command against bad paths and bad values (issue 18): each is a user error, so each must
end with one message, exit code 1, and no 'Unexpected error' or traceback.

The cases run in-process (typer's CliRunner) on an empty workspace: each fails before any model
loads, which is the point (a mistake is named before minutes of work, not after)."""

from __future__ import annotations

from pathlib import Path

import pytest

# {a_file}, {a_folder}, {missing} and {bad_toml} are filled in per test
CASES: list[tuple[str, ...]] = [
    # global options
    ("--workdir", "{a_file}", "config"),
    ("--config", "{missing}", "config"),
    ("--config", "{bad_toml}", "config"),
    # fetch
    ("fetch", "{missing}"),
    ("fetch", "--exec=rm"),
    ("fetch",),
    # segment
    ("segment",),
    ("segment", "--min-duration", "-1"),
    ("segment", "--max-duration", "abc"),
    # screen
    ("screen",),
    ("screen", "--speaker-ref", "{missing}"),
    ("screen", "--speaker-ref", "{a_folder}"),
    # transcribe
    ("transcribe",),
    ("transcribe", "--language", "xx"),
    ("transcribe", "--model", "no-such-model"),
    ("transcribe", "--batch-size", "-3"),
    # build
    ("build",),
    ("build", "--dataset-name", "../outside"),
    ("build", "--dataset-name", "raw"),
    ("build", "--val-fraction", "2"),
    ("build", "--check", "{missing}"),
    ("build", "--check", "{a_file}"),
    # train
    ("train", "--dataset-dir", "{missing}"),
    ("train", "--dataset-dir", "{a_file}"),
    ("train", "--dataset-dir", "{a_folder}"),
    ("train", "--num-epochs", "0"),
    ("train", "--run-name", "../x"),
    ("train", "--lora-rank", "-1"),
    ("train", "--resume"),
    ("train", "--base-model", "{missing}"),
    ("train", "--language", "klingon"),
    # synth
    ("synth", "Olá.", "--model", "no-such-run"),
    ("synth", "Olá.", "--out", "{a_folder}"),
    ("synth", "Olá.", "--out", "{a_file}/x.wav"),
    ("synth", "Olá.", "--speaker-wav", "{missing}"),
    ("synth", "--text-file", "{missing}"),
    ("synth", "--text-file", "{a_folder}"),
    ("synth", "Olá.", "--temperature", "-1"),
    ("synth",),
    # export
    ("export", "no-such-run"),
    ("export", "--out", "{a_file}/x"),
    # eval
    ("eval", "no-such-run"),
    ("eval", "--sentences", "{missing}"),
    # run-all
    ("run-all", "--from", "no-such-stage"),
    ("run-all",),
    # settings from the environment
    ("config", "ENV:TRAIN_NUM_EPOCHS=abc"),
    ("doctor", "ENV:TRAIN_BATCH_SIZE=-2"),
    ("build", "ENV:BUILD_DATASET_NAME=processed"),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("sweep")
    (root / "a-file.txt").write_text("not audio, not a folder\n")
    (root / "a-folder").mkdir()
    (root / "bad.toml").write_text("[train\nnum_epochs = = 3\n")
    return {
        "a_file": str(root / "a-file.txt"),
        "a_folder": str(root / "a-folder"),
        "missing": str(root / "does-not-exist"),
        "bad_toml": str(root / "bad.toml"),
    }


@pytest.mark.parametrize("case", CASES, ids=lambda c: " ".join(c))
def test_a_user_error_is_one_message_and_exit_1(
    cli, places: dict[str, str], case: tuple[str, ...], tmp_path: Path
) -> None:
    args = [a.format(**places) for a in case if not a.startswith("ENV:")]
    env = dict(a[4:].split("=", 1) for a in case if a.startswith("ENV:"))
    if args[0] == "--workdir":  # the global option replaces the fixture's workspace
        from typer.testing import CliRunner

        from xttsft.cli import app

        res = CliRunner().invoke(app, args, env=env, catch_exceptions=False)
    else:
        res = cli(*args, env=env, workdir=tmp_path / "ws")
    out = res.output
    assert "Unexpected error" not in out and "Traceback" not in out, out
    assert res.exit_code == 1, f"exit {res.exit_code}:\n{out}"
    assert out.strip(), "a message says what is wrong"
