"""CLI wiring through CliRunner: help that teaches, --version, config, error paths."""

from __future__ import annotations

import json
from importlib import metadata

import pytest
import typer
from typer.testing import CliRunner

import xttsft
from xttsft.cli import app
from xttsft.cli._common import handle_errors, state


def flat(text: str) -> str:
    return " ".join(text.split())


def registered_commands() -> list[str]:
    return sorted(typer.main.get_command(app).commands)


def test_main_help_lists_the_pipeline(cli):
    res = cli("--help")
    assert res.exit_code == 0
    out = flat(res.stdout)
    assert "fetch -> segment -> screen -> transcribe -> build -> train -> synth" in out
    for option in ("--workdir", "--config", "--verbose", "--quiet", "--version"):
        assert option in out
    for name in registered_commands():
        assert name in out


def test_no_args_shows_help():
    res = CliRunner().invoke(app, [])
    assert "Usage" in res.output and "config" in res.output


@pytest.mark.parametrize("command", registered_commands())
def test_every_command_help_teaches(cli, command):
    res = cli(command, "--help")
    assert res.exit_code == 0, res.output
    out = flat(res.stdout)
    assert f"xttsft {command}" in out  # usage line
    assert "example" in out.lower(), f"`xttsft {command} --help` shows no example"
    # more than a one-liner: what it does, inputs, outputs
    doc = typer.main.get_command(app).commands[command].help or ""
    assert len(doc.split()) >= 25, f"`xttsft {command} --help` is too short to teach"


def test_config_and_doctor_are_registered():
    assert {"config", "doctor"} <= set(registered_commands())


def test_version(cli):
    res = cli("--version")
    assert res.exit_code == 0
    assert res.stdout.strip() == f"xttsft {xttsft.__version__}"
    assert metadata.version("xttsft") == xttsft.__version__


def test_config_json_shows_environment_value(cli):
    res = cli("config", "--json", env={"TRAIN_NUM_EPOCHS": "7"})
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    epochs = data["train"]["num_epochs"]
    assert epochs == {"value": 7, "source": "environment", "detail": "TRAIN_NUM_EPOCHS", "env": "TRAIN_NUM_EPOCHS"}
    assert data["train"]["lora_rank"]["source"] == "default"
    assert set(data) == {"fetch", "segment", "screen", "transcribe", "build", "train", "synth"}


def test_config_table_shows_sources(cli, workspace):
    workspace.root.mkdir(parents=True)
    (workspace.root / ".env").write_text("TRAIN_LORA_RANK=4\n")
    res = cli("config", env={"TRAIN_NUM_EPOCHS": "7"})
    assert res.exit_code == 0
    out = flat(res.stdout)
    assert "TRAIN_NUM_EPOCHS" in out and "environment" in out and ".env" in out


def test_config_reads_dotenv_files_and_config_option(cli, workspace, tmp_path):
    workspace.train_dir.mkdir(parents=True)
    (workspace.train_dir / ".env").write_text("TRAIN_LORA_RANK=4\nTRAIN_LORA_ALPHA=4\n")
    (workspace.root / ".env").write_text("TRAIN_LORA_RANK=32\n")
    cfg = tmp_path / "my.toml"
    cfg.write_text("[train]\nnum_workers = 3\nlora_alpha = 99\n")
    data = json.loads(cli("--config", str(cfg), "config", "--json").stdout)["train"]
    assert data["lora_rank"]["value"] == 32 and data["lora_rank"]["source"] == ".env"  # workdir .env wins
    assert data["lora_alpha"]["value"] == 4  # train/.env over the config file
    assert data["num_workers"] == {"value": 3, "source": "config file", "detail": str(cfg), "env": "TRAIN_NUM_WORKERS"}


def test_missing_config_option_file(cli, tmp_path):
    res = cli("--config", str(tmp_path / "missing.toml"), "config")
    assert res.exit_code == 1
    assert "does not exist" in flat(res.stderr) and "Traceback" not in res.output


def test_invalid_settings_exit_1_with_every_problem(cli, workspace):
    workspace.root.mkdir(parents=True)
    (workspace.root / ".env").write_text("TRAIN_LORA_RANK=0\nnot a setting line\n")
    res = cli("config", env={"TRAIN_NUM_EPOCHS": "-1", "TRAIN_DEVICE": "tpu",
                             "SEGMENT_MIN_DURATION": "20", "SEGMENT_MAX_DURATION": "10"})
    assert res.exit_code == 1
    err = flat(res.stderr)
    assert "Traceback" not in res.output
    assert "Invalid settings (5 problems)" in err
    for piece in ("TRAIN_NUM_EPOCHS='-1' (environment)", "TRAIN_DEVICE='tpu' (environment)",
                  "TRAIN_LORA_RANK='0' (.env:", "cannot parse 'not a setting line'",
                  "SEGMENT_MIN_DURATION='20' (environment)", "Hint:"):
        assert piece in err, piece
    assert res.stdout == ""


def test_unexpected_error_prints_the_log_path(workspace):
    """A bug (not a user error) gives a short message and the log that holds the traceback."""
    from xttsft.cli import _global

    broken = typer.Typer()
    broken.callback()(_global)

    @broken.command("explode")
    @handle_errors
    def explode(ctx: typer.Context) -> None:
        """Fail like a bug would."""
        state(ctx).load()
        raise ZeroDivisionError("a bug in the core")

    workspace.root.mkdir(parents=True)
    res = CliRunner().invoke(broken, ["--workdir", str(workspace.root), "explode"])
    assert res.exit_code == 1
    err = flat(res.stderr)
    assert "Unexpected error: ZeroDivisionError: a bug in the core" in err
    assert str(workspace.error_log) in err
    assert "Traceback" not in res.output
    log_text = workspace.error_log.read_text()
    assert "Traceback" in log_text and "ZeroDivisionError: a bug in the core" in log_text


def test_user_error_is_logged_without_traceback(workspace):
    from xttsft.cli import _global
    from xttsft.errors import InputError

    app2 = typer.Typer()
    app2.callback()(_global)

    @app2.command("bad")
    @handle_errors
    def bad(ctx: typer.Context) -> None:
        """Fail like bad input does."""
        state(ctx).load()
        raise InputError("no such file: x.wav", hint="Pass an existing file.")

    workspace.root.mkdir(parents=True)
    res = CliRunner().invoke(app2, ["--workdir", str(workspace.root), "bad"])
    assert res.exit_code == 1
    assert "Error: no such file: x.wav" in flat(res.stderr) and "Hint: Pass an existing file." in flat(res.stderr)
    assert "no such file: x.wav" in workspace.error_log.read_text()
    assert "no such file: x.wav" in workspace.info_log.read_text()


def test_error_log_path_is_this_commands(tmp_path):
    """A second command in the same process (another workdir) must not name the first one's log."""
    from xttsft.cli import _global

    app3 = typer.Typer()
    app3.callback()(_global)

    @app3.command("load")
    @handle_errors
    def load(ctx: typer.Context) -> None:
        """Load the settings, which starts the workspace's file logs."""
        state(ctx).load()

    @app3.command("early")
    @handle_errors
    def early(ctx: typer.Context) -> None:
        """Fail before any file log exists."""
        raise RuntimeError("early bug")

    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    runner = CliRunner()
    assert runner.invoke(app3, ["--workdir", str(first), "load"]).exit_code == 0
    res = runner.invoke(app3, ["--workdir", str(second), "early"])
    assert res.exit_code == 1
    err = flat(res.stderr)
    assert "Unexpected error: RuntimeError: early bug" in err
    assert str(first) not in err and "Run again with -v" in err
    assert "early bug" not in (first / "logs" / "error.log").read_text()
