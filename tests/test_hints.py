"""Every option a message names exists on the command that prints it (issue 18: eval's hint named
--speaker-wav, which eval does not have)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import typer.main

from xttsft.cli import app

SRC = Path(__file__).resolve().parents[1] / "src" / "xttsft"
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9]*(?:-[a-z0-9]+)*)")
COMMAND = re.compile(r"\bxttsft\s+(?:-\S+\s+(?:\S+\s+)?)*?([a-z][a-z-]+)\b")
OTHER_TOOL = re.compile(r"\b(tensorboard|hf|huggingface-cli|nvidia-smi|yt-dlp|torchrun|pip|ffmpeg|ffprobe|python)\b")

# core modules whose messages reach the user through one command
MODULE_COMMANDS = {
    "build": {"build"},
    "fetch": {"fetch"},
    "segment": {"segment"},
    "screen": {"screen"},
    "transcribe": {"transcribe"},
    "train": {"train"},
    "trainer": {"train"},
    "train_data": {"train"},
    "synth": {"synth"},
    "export": {"export"},
    "evaluate": {"eval"},
    "doctor": {"doctor"},
    "pipeline": {"run-all"},
    "demo": {"run-all"},
}


def _options() -> tuple[dict[str, set[str]], set[str]]:
    group = typer.main.get_command(app)
    per_command = {
        name: {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} for name, cmd in group.commands.items()
    }
    global_opts = {o for p in group.params for o in (*p.opts, *p.secondary_opts)}
    return per_command, global_opts


def _strings(path: Path) -> list[tuple[int, str]]:
    """The text of every string literal, f-strings joined (their fields become '{}')."""
    out = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parts = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
    for node in ast.walk(tree):
        if id(node) in parts:
            continue  # a piece of an f-string: read with its f-string
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
            out.append((node.lineno, text))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.append((node.lineno, node.value))
    docstring = ast.get_docstring(tree, clean=False)  # the module's notes for developers, not a message
    return [
        (line, text)
        for line, text in out  # an argument list item ("--format=csv") is no message
        if text != docstring and not (text.startswith("-") and " " not in text)
    ]


def _mentions() -> list[tuple[str, int, set[str] | None, str]]:
    """(file, line, the commands it must exist on or None for any command, option)."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        module = path.stem
        owners = (
            {module.replace("_", "-")}
            if rel.parts[0] == "cli" and module not in {"__init__", "_common"}
            else MODULE_COMMANDS.get(module)
            if len(rel.parts) == 1
            else None
        )
        for line, text in _strings(path):
            for m in OPTION.finditer(text):
                clause = re.split(r"[;`()\n]|\.\s|:\s", text[: m.start()])[-1]  # the command line it is part of
                if OTHER_TOOL.search(clause):
                    continue  # tensorboard --logdir, hf download --revision, nvidia-smi --query-gpu ...
                named = COMMAND.findall(clause)
                found.append((str(rel), line, {named[-1]} if named else owners, m.group(1)))
    return found


def test_the_scan_finds_the_hints() -> None:
    mentions = _mentions()
    assert len(mentions) > 50
    assert any(opt == "--resume" and cmds == {"train"} for _, _, cmds, opt in mentions)


def test_every_option_a_message_names_exists_on_its_command() -> None:
    per_command, global_opts = _options()
    every = set().union(*per_command.values()) | global_opts
    wrong = []
    for where, line, commands, opt in _mentions():
        if opt in global_opts or opt in {"--help"}:
            continue
        if commands is None or not commands <= set(per_command):
            ok = opt in every
        else:
            ok = all(opt in per_command[c] for c in commands)
        if not ok:
            wrong.append(f"{where}:{line}: {opt} ({', '.join(sorted(commands or {'any command'}))})")
    if wrong:
        pytest.fail("options named in messages that the command lacks:\n" + "\n".join(wrong))
