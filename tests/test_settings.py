"""Settings: precedence flag > environment > .env (workdir over train/.env) > config
file (xttsft.toml or --config) > default, for every TRAIN_* name of the guide, the
parsing of environment strings, and validation messages that list every problem."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from xttsft.cli._common import AppState
from xttsft.errors import SettingsError
from xttsft.paths import Workspace
from xttsft.settings import SECTIONS, TrainSettings, load_settings

LAYERS = ("default", "config file", "train/.env", ".env", "environment", "flag")

# Every TRAIN_* name of the guide, with a distinct value per layer
# (config file as TOML literal, .env files and environment as strings, flag as a Python value)
# and the value each layer must produce.
CASES: dict[str, tuple[list[str], Any, list[Any]]] = {
    # env name: ([toml, train/.env, .env, env] raw values, flag value, [expected toml, train/.env, .env, env, flag])
    "TRAIN_NUM_EPOCHS": (["11", "12", "13", "14"], 15, [11, 12, 13, 14, 15]),
    "TRAIN_LEARNING_RATE": (["1e-4", "2e-4", "3e-4", "4e-4"], 5e-4, [1e-4, 2e-4, 3e-4, 4e-4, 5e-4]),
    "TRAIN_BATCH_SIZE": (["1", "3", "4", "5"], 6, [1, 3, 4, 5, 6]),
    "TRAIN_USE_LORA": (["false", "true", "false", "true"], False, [False, True, False, True, False]),
    "TRAIN_LORA_RANK": (["4", "16", "32", "64"], 2, [4, 16, 32, 64, 2]),
    "TRAIN_LORA_ALPHA": (["4", "8", "32", "64"], 2, [4, 8, 32, 64, 2]),
    "TRAIN_DEVICE": (['"cpu"', "cuda", "cpu", "cuda"], "cpu", ["cpu", "cuda", "cpu", "cuda", "cpu"]),
    "TRAIN_CUDA_DEVICE_ID": (["1", "2", "3", "4"], 5, [1, 2, 3, 4, 5]),
    "TRAIN_DATASET_DIR": (
        ['"/data/toml"', "/data/trainenv", "/data/dotenv", "/data/env"],
        Path("/data/flag"),
        [Path("/data/toml"), Path("/data/trainenv"), Path("/data/dotenv"), Path("/data/env"), Path("/data/flag")],
    ),
    "TRAIN_NUM_WORKERS": (["1", "2", "3", "4"], 5, [1, 2, 3, 4, 5]),
    "TRAIN_USE_AMP": (["true", "false", "true", "false"], True, [True, False, True, False, True]),
    "TRAIN_SAVE_EVERY_N_EPOCHS": (["1", "2", "3", "4"], 5, [1, 2, 3, 4, 5]),
    "TRAIN_USE_TENSORBOARD": (["false", "true", "false", "true"], False, [False, True, False, True, False]),
}

GUIDE_DEFAULTS = {  # the guide's 1000 epochs: num_epochs is auto (sized from the data), and 1000 still works
    "TRAIN_USE_LORA": True,
    "TRAIN_LORA_RANK": 8,
    "TRAIN_LORA_ALPHA": 16,
    "TRAIN_SAVE_EVERY_N_EPOCHS": 10,
    "TRAIN_USE_TENSORBOARD": True,
}


def field_of(env_name: str) -> str:
    return env_name.removeprefix("TRAIN_").lower()


def write_layers(ws: Workspace, env_name: str, top: int) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """Set ``env_name`` in every layer up to ``top`` (index into LAYERS); return (environ, flags)."""
    raw, flag_value, _ = CASES[env_name]
    field = field_of(env_name)
    ws.train_dir.mkdir(parents=True, exist_ok=True)
    environ: dict[str, str] = {}
    flags: dict[str, dict[str, Any]] = {}
    if top >= 1:
        ws.config_file.write_text(f"[train]\n{field} = {raw[0]}\n")
    if top >= 2:
        (ws.train_dir / ".env").write_text(f"{env_name}={raw[1]}\n")
    if top >= 3:
        (ws.root / ".env").write_text(f"# comment\n{env_name}={raw[2]}\n")
    if top >= 4:
        environ[env_name] = raw[3]
    if top >= 5:
        flags = {"train": {field: flag_value}}
    return environ, flags


@pytest.mark.parametrize("top", range(len(LAYERS)), ids=LAYERS)
@pytest.mark.parametrize("env_name", list(CASES))
def test_precedence_every_train_name(tmp_path, env_name, top):
    ws = Workspace(tmp_path / "ws")
    environ, flags = write_layers(ws, env_name, top)
    settings, provenance = load_settings(ws, flags=flags, environ=environ)
    field = field_of(env_name)
    value = getattr(settings.train, field)
    source = provenance["train"][field]
    expected_kind = {"train/.env": ".env"}.get(LAYERS[top], LAYERS[top])
    assert source.kind == expected_kind
    if top == 0:
        assert value == TrainSettings.model_fields[field].get_default(call_default_factory=True)
    else:
        expected = CASES[env_name][2][top - 1]
        assert value == expected and type(value) is type(expected)
    if LAYERS[top] == "train/.env":
        assert str(ws.train_dir / ".env") in source.detail
    if LAYERS[top] == ".env":
        assert source.detail.endswith(str(ws.root / ".env"))
    if LAYERS[top] == "flag":
        assert source.detail == "--" + field.replace("_", "-")


def test_env_names_are_the_guides():
    for env_name in CASES:
        assert TrainSettings.env_name(field_of(env_name)) == env_name
        assert field_of(env_name) in TrainSettings.model_fields


@pytest.mark.parametrize(("env_name", "default"), list(GUIDE_DEFAULTS.items()))
def test_guide_defaults(workspace, env_name, default):
    settings, _ = load_settings(workspace, environ={})
    assert getattr(settings.train, field_of(env_name)) == default


def test_other_defaults_of_the_guide(workspace):
    s, _ = load_settings(workspace, environ={})
    assert (s.segment.min_duration, s.segment.max_duration, s.segment.silence_threshold) == (5.0, 15.0, -40.0)
    for auto in (
        s.train.batch_size,
        s.train.use_amp,
        s.train.device,
        s.transcribe.compute_type,
        s.transcribe.model,
        s.train.num_epochs,
    ):
        assert auto == "auto"
    guide, _ = load_settings(workspace, environ={"TRAIN_NUM_EPOCHS": "1000"})
    assert guide.train.num_epochs == 1000 and s.train.early_stopping_patience == 10


def test_other_sections_follow_the_pattern(workspace):
    s, prov = load_settings(
        workspace,
        environ={
            "SEGMENT_MIN_DURATION": "3.5",
            "TRANSCRIBE_MODEL": "small",
            "BUILD_DATASET_NAME": "Voice",
            "SYNTH_TEMPERATURE": "0.5",
        },
    )
    assert s.segment.min_duration == 3.5 and prov["segment"]["min_duration"].detail == "SEGMENT_MIN_DURATION"
    assert s.transcribe.model == "small" and s.build.dataset_name == "Voice" and s.synth.temperature == 0.5
    for name, cls in SECTIONS.items():
        for field in cls.model_fields:
            assert cls.env_name(field) == f"{name.upper()}_{field.upper()}"
            assert cls.model_fields[field].description, f"{name}.{field} has no description"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
        ("off", False),
        ("true", True),
        ("1", True),
        ("yes", True),
        ("on", True),
    ],
)
def test_bool_from_environment(workspace, raw, expected):
    s, _ = load_settings(workspace, environ={"TRAIN_USE_LORA": raw, "TRAIN_USE_AMP": raw})
    assert s.train.use_lora is expected
    assert s.train.use_amp is expected


def test_auto_or_number_from_environment(workspace):
    s, _ = load_settings(
        workspace,
        environ={
            "TRAIN_BATCH_SIZE": "4",
            "TRAIN_LEARNING_RATE": "5e-5",
            "TRAIN_USE_AMP": "auto",
            "TRANSCRIBE_BATCH_SIZE": "auto",
        },
    )
    assert s.train.batch_size == 4 and isinstance(s.train.batch_size, int)
    assert s.train.learning_rate == 5e-5 and isinstance(s.train.learning_rate, float)
    assert s.train.use_amp == "auto" and s.transcribe.batch_size == "auto"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("c_attn,c_fc", ["c_attn", "c_fc"]), (" c_attn , c_proj ", ["c_attn", "c_proj"]), ('["c_fc"]', ["c_fc"])],
)
def test_list_from_environment(workspace, raw, expected):
    s, _ = load_settings(workspace, environ={"TRAIN_LORA_TARGET_MODULES": raw})
    assert s.train.lora_target_modules == expected


def test_list_from_toml_and_dotenv(workspace):
    workspace.root.mkdir(parents=True)
    workspace.config_file.write_text('[train]\nlora_target_modules = ["c_proj"]\n')
    s, _ = load_settings(workspace, environ={})
    assert s.train.lora_target_modules == ["c_proj"]
    (workspace.root / ".env").write_text('TRAIN_LORA_TARGET_MODULES="c_attn,c_fc"\n')
    s, prov = load_settings(workspace, environ={})
    assert s.train.lora_target_modules == ["c_attn", "c_fc"] and prov["train"]["lora_target_modules"].kind == ".env"


def test_dotenv_syntax(workspace):
    """Comments, blank lines, quotes and `export` are understood."""
    workspace.root.mkdir(parents=True)
    (workspace.root / ".env").write_text(
        "# my voice\n\nexport TRAIN_NUM_EPOCHS=50\nTRAIN_RUN_NAME='my run'\nTRAIN_LORA_RANK=4  # small\n"
        "HF_TOKEN=ignored-not-a-setting\n"
    )
    s, _ = load_settings(workspace, environ={})
    assert (s.train.num_epochs, s.train.run_name, s.train.lora_rank) == (50, "my run", 4)


def test_explicit_config_file_replaces_workdir_toml(workspace, tmp_path):
    workspace.root.mkdir(parents=True)
    workspace.config_file.write_text("[train]\nnum_epochs = 11\nlora_rank = 4\n")
    other = tmp_path / "other.toml"
    other.write_text("[train]\nnum_epochs = 22\n")
    s, prov = load_settings(workspace, config_file=other, environ={})
    assert s.train.num_epochs == 22 and prov["train"]["num_epochs"].detail == str(other)
    assert s.train.lora_rank == 8  # xttsft.toml is not read when --config is given
    s, _ = load_settings(workspace, environ={})
    assert (s.train.num_epochs, s.train.lora_rank) == (11, 4)


def test_missing_config_file_is_an_error(workspace, tmp_path):
    with pytest.raises(SettingsError, match="does not exist") as exc:
        load_settings(workspace, config_file=tmp_path / "nope.toml", environ={})
    assert exc.value.hint


def test_app_state_load_applies_flags_and_dataset_name(workspace, monkeypatch):
    workspace.root.mkdir(parents=True)
    (workspace.root / ".env").write_text("BUILD_DATASET_NAME=Voice\nTRAIN_NUM_EPOCHS=9\n")
    monkeypatch.setenv("TRAIN_NUM_EPOCHS", "8")
    st = AppState(workdir=workspace.root)
    settings, ws = st.load(file_logs=False, train={"num_epochs": 7, "lora_rank": None})
    assert settings.train.num_epochs == 7 and settings.train.lora_rank == 8  # None: flag not given
    assert ws.dataset_dir == workspace.root / "train" / "data" / "Voice"
    settings, _ = st.load(file_logs=False)
    assert settings.train.num_epochs == 8


# ------------------------------------------------------------------ validation


def flat(msg: str) -> str:
    return " ".join(msg.split())


def test_all_problems_in_one_message(workspace):
    ws = workspace
    ws.train_dir.mkdir(parents=True)
    ws.config_file.write_text("[segment]\nmin_duration = 20.0\n[train]\nlora_rnk = 4\n[trian]\nx = 1\n")
    (ws.train_dir / ".env").write_text("TRAIN_DEVICE=tpu\n")
    (ws.root / ".env").write_text("TRAIN_LORA_RANK=0\nthis line is wrong\nTRAIN_EPOCHS=3\n")
    with pytest.raises(SettingsError) as exc:
        load_settings(ws, flags={"train": {"num_epochs": -5}}, environ={"TRAIN_LORA_ALPHA": "many"})
    msg = flat(exc.value.message)
    problems = [line for line in exc.value.message.splitlines() if line.startswith("  - ")]
    assert f"({len(problems)} problems)" in msg and len(problems) == 9, msg
    # each names the variable or flag, its value and its source
    assert "--num-epochs=-5 (flag): Input should be greater than or equal to 1" in msg
    assert f"TRAIN_LORA_RANK='0' (.env: {ws.root / '.env'})" in msg
    assert f"TRAIN_DEVICE='tpu' (.env: {ws.train_dir / '.env'}): Input should be 'auto', 'cpu' or 'cuda'" in msg
    assert "TRAIN_LORA_ALPHA='many' (environment)" in msg
    assert f"{ws.root / '.env'}:2: cannot parse 'this line is wrong'" in msg
    assert "unknown setting TRAIN_EPOCHS (did you mean TRAIN_NUM_EPOCHS?)" in msg
    assert f"{ws.config_file}: unknown setting [train] lora_rnk (did you mean lora_rank?)" in msg
    assert "unknown section [trian]" in msg
    assert "[segment] min_duration=20.0 (config file:" in msg and "must be less than max_duration" in msg
    assert exc.value.hint and "xttsft config" in exc.value.hint


def test_union_fields_give_one_line(workspace):
    with pytest.raises(SettingsError) as exc:
        load_settings(workspace, environ={"TRAIN_USE_AMP": "maybe", "TRAIN_BATCH_SIZE": "0"})
    lines = [line for line in exc.value.message.splitlines() if line.startswith("  - ")]
    assert len(lines) == 2
    assert any("TRAIN_USE_AMP='maybe' (environment)" in line and "'auto'" in line for line in lines)
    assert any("TRAIN_BATCH_SIZE='0' (environment): must be at least 1, or auto" in line for line in lines)


def test_min_over_max_duration_names_both(workspace):
    with pytest.raises(SettingsError) as exc:
        load_settings(workspace, environ={"SEGMENT_MIN_DURATION": "12", "SEGMENT_MAX_DURATION": "8"})
    msg = flat(exc.value.message)
    assert "SEGMENT_MIN_DURATION='12' (environment)" in msg and "SEGMENT_MAX_DURATION='8' (environment)" in msg


def test_pads_must_leave_room_for_speech(workspace):
    # max 1 s with 0.6 s pads leaves no speech: the forced split could never finish
    with pytest.raises(SettingsError) as exc:
        load_settings(workspace, flags={"segment": {"min_duration": 0.5, "max_duration": 1.0, "pad": 0.6}})
    assert "--max-duration" in exc.value.message and "--pad" in exc.value.message


def test_bad_toml_is_reported(workspace):
    workspace.root.mkdir(parents=True)
    workspace.config_file.write_text("[train\nnum_epochs = \n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(workspace, environ={})


def test_invalid_toml_value_names_the_file(workspace):
    workspace.root.mkdir(parents=True)
    workspace.config_file.write_text("[train]\nnum_epochs = 0\n")
    with pytest.raises(SettingsError) as exc:
        load_settings(workspace, environ={})
    assert f"[train] num_epochs=0 (config file: {workspace.config_file})" in flat(exc.value.message)


def test_empty_value_unsets_optional_settings(workspace):
    """`TRAIN_DATASET_DIR=` in a .env template must not become Path('.'), nor `TRAIN_RUN_NAME=` ''."""
    workspace.root.mkdir(parents=True)
    (workspace.root / ".env").write_text("TRAIN_DATASET_DIR=\nTRAIN_RUN_NAME=\n")
    s, _ = load_settings(workspace, environ={"SYNTH_SEED": ""})
    assert s.train.dataset_dir is None and s.train.run_name is None and s.synth.seed is None
    with pytest.raises(SettingsError, match="TRAIN_NUM_EPOCHS=''"):
        load_settings(workspace, environ={"TRAIN_NUM_EPOCHS": ""})  # required values stay required


# ------------------------------------------------------------------ every mistake gets a message (issue 18)


def test_unknown_names_are_warned_once_with_a_suggestion(workspace, caplog):
    """TRAIN_NUM_EPOCH=5 (no S) used to train the default 1000 epochs without a word."""
    workspace.root.mkdir(parents=True)
    dotenv = workspace.root / ".env"
    dotenv.write_text("XTTSFT_LORA_RANKK=4\nTRIAN_WARMUP_STEPS=3\nXTTSFT_CACHE_DIR=/tmp/c\nHF_TOKEN=x\n")
    environ = {
        "TRAIN_NUM_EPOCH": "5",
        "XTTSFT_NOTHING_LIKE_IT": "1",
        "XTTSFT_CACHE_DIR": "/tmp/c",
        "BUILD_ID": "77",
        "BUILD_NUMBER": "3",
        "BUILD_URL": "http://ci",
        "SYNTH_SOMETHING_ELSE": "x",
    }
    with caplog.at_level(logging.WARNING, logger="xttsft.settings"):
        settings, _ = load_settings(workspace, environ=environ)
        load_settings(workspace, environ=environ)  # a second load in the same command says nothing new
    warned = [r.getMessage() for r in caplog.records if r.name == "xttsft.settings"]
    assert settings.train.num_epochs == "auto"  # a warning, not an error: the command goes on (with the default)
    expected = [
        "TRAIN_NUM_EPOCH (environment) is not an xttsft setting and is ignored; did you mean TRAIN_NUM_EPOCHS?",
        "XTTSFT_NOTHING_LIKE_IT (environment) is not an xttsft setting and is ignored; settings are named "
        "SECTION_SETTING, e.g. TRAIN_NUM_EPOCHS",
        f"XTTSFT_LORA_RANKK (.env: {dotenv}) is not an xttsft setting and is ignored; did you mean TRAIN_LORA_RANK?",
        f"TRIAN_WARMUP_STEPS (.env: {dotenv}) is not an xttsft setting and is ignored; did you mean "
        "TRAIN_WARMUP_STEPS?",
        f"XTTSFT_CACHE_DIR in {dotenv} is ignored: xttsft reads it from the environment only",
    ]
    for line in expected:
        assert sum(w.startswith(line) for w in warned) == 1, (line, warned)
    # other software's variables that merely share a prefix (CI's BUILD_*), HF_TOKEN, and the real
    # XTTSFT_CACHE_DIR in the environment are left alone
    assert len(warned) == len(expected), warned


def test_every_language_setting_takes_regional_forms_and_refuses_unknown_codes(workspace):
    s, _ = load_settings(
        workspace,
        flags={"transcribe": {"language": "pt-BR"}, "build": {"language": "en_US"}},
        environ={"TRAIN_LANGUAGE": "zh-CN", "SYNTH_LANGUAGE": "Portuguese"},
    )
    assert (s.transcribe.language, s.build.language, s.train.language, s.synth.language) == ("pt", "en", "zh-cn", "pt")
    s, _ = load_settings(
        workspace,
        environ={
            "TRANSCRIBE_LANGUAGE": "AUTO",
            "BUILD_LANGUAGE": "auto",
            "TRAIN_LANGUAGE": "auto",
            "SYNTH_LANGUAGE": "pt_br",
        },
    )
    assert (s.transcribe.language, s.build.language, s.train.language, s.synth.language) == ("auto", "auto", None, "pt")
    with pytest.raises(SettingsError) as exc:
        load_settings(workspace, flags={"transcribe": {"language": "xx"}}, environ={"SYNTH_LANGUAGE": "klingon"})
    msg = flat(exc.value.message)
    known = "en, es, fr, de, it, pt, pl, tr, ru, nl, cs, ar, zh-cn, hu, ko, ja, hi"
    assert f"--language='xx' (flag): language 'xx' is not supported: XTTS-v2 speaks {known}, or auto" in msg
    assert f"SYNTH_LANGUAGE='klingon' (environment): language 'klingon' is not supported: XTTS-v2 speaks {known}" in msg
    assert "(2 problems)" in msg
