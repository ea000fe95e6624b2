"""The READMEs' commands stay true: every `xttsft` line names a real command and
real flags, and the Portuguese README shows the same commands as the English one."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xttsft.cli import app

ROOT = Path(__file__).resolve().parents[1]
GLOBAL_FLAGS = {"--workdir", "-w", "--config", "--verbose", "-v", "--quiet", "-q", "--version"}


def _command_lines(readme: Path) -> list[str]:
    """Lines inside ``` blocks that run something, without their # comment."""
    lines, inside = [], False
    for line in readme.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            inside = not inside
            continue
        if inside:
            cmd = re.sub(r"\s+#.*$", "", line).strip()
            if re.match(r"^(\w+=\S+ )*(xttsft|make|torchrun|tensorboard) ", cmd + " "):
                lines.append(cmd)
    return lines


def _xttsft_calls(readme: Path) -> list[list[str]]:
    calls = []
    for cmd in _command_lines(readme):
        words = shlex.split(cmd.replace("$(which xttsft)", "xttsft"))
        if "xttsft" in words:
            calls.append(words[words.index("xttsft") + 1 :])
    return calls


@pytest.mark.parametrize("readme", ["README.md", "README.pt-BR.md"])
def test_readme_commands_and_flags_exist(readme: str) -> None:
    runner = CliRunner()
    helps: dict[str, str] = {}
    calls = _xttsft_calls(ROOT / readme)
    assert len(calls) > 20
    for words in calls:
        args = [w for w in words if w not in GLOBAL_FLAGS]
        sub = next((w for w in args if not w.startswith("-")), None)
        assert sub is not None, words
        if sub not in helps:
            res = runner.invoke(app, [sub, "--help"], env={"COLUMNS": "200"})
            assert res.exit_code == 0, f"`xttsft {sub}` in {readme} is not a command:\n{res.output}"
            helps[sub] = res.output
        for flag in (w.split("=")[0] for w in args if w.startswith("--")):
            assert flag in helps[sub], f"{readme}: `xttsft {sub}` has no {flag}"


def test_portuguese_readme_shows_the_same_commands() -> None:
    assert _command_lines(ROOT / "README.pt-BR.md") == _command_lines(ROOT / "README.md")


def test_readme_names_the_test_command_and_the_license() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make test" in text and "make demo" in text
    assert "Coqui Public Model License" in text
    assert "make test" in (ROOT / ".ci" / "run").read_text()
