"""The rules of docs/architecture.md, checked on the source: the folders' one-way imports, no import
circle, and first-party imports at the top of the module (with the two marked exceptions)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "xttsft"

#: who may import whom: a layer imports its own and those listed (the shared modules are open to all)
ALLOWED = {
    "cli": {"data", "training", "voice", "model", "pipeline", "shared"},
    "pipeline": {"data", "training", "voice", "model", "shared"},
    "voice": {"data", "model", "shared"},  # data: the Whisper loader (evaluate) and datasets (synth)
    "training": {"data", "model", "shared"},
    "data": {"model", "shared"},
    "model": {"shared"},
    "shared": {"model", "shared"},  # doctor and bundled_whisper read model facts
}


def _module(path: Path) -> str:
    parts = list(path.with_suffix("").relative_to(SRC).parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str:
    part = (module.split(".") + [""])[1]
    if part in ("cli", "data", "training", "voice", "model", "pipeline"):
        return part
    return "cli" if part == "__main__" else "shared"


def _imports(tree: ast.AST) -> list[tuple[ast.Import | ast.ImportFrom, str]]:
    found: list[tuple[ast.Import | ast.ImportFrom, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("xttsft"):
            targets = [f"xttsft.{a.name}" for a in node.names] if node.module == "xttsft" else [node.module or ""]
            found += [(node, t) for t in targets]
        elif isinstance(node, ast.Import):
            found += [(node, a.name) for a in node.names if a.name.startswith("xttsft.")]
    return found


SOURCES = sorted(PKG.rglob("*.py"))


def test_layers_import_one_way():
    wrong = []
    for path in SOURCES:
        me = _module(path)
        for node, target in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if target == "xttsft" or _layer(target) == _layer(me):
                continue
            if _layer(target) not in ALLOWED[_layer(me)]:
                wrong.append(f"{me}:{node.lineno} imports {target}")
    assert not wrong, "imports against the folder order (docs/architecture.md):\n" + "\n".join(wrong)


#: what the CLI imports at the top: these load neither pydantic nor numpy
LIGHT = {"xttsft.errors", "xttsft.paths", "xttsft.logs", "xttsft.hardware", "xttsft.storage", "xttsft.progress"}


def _lazy_allowed(me: str, target: str, node: ast.Import | ast.ImportFrom, lines: list[str]) -> bool:
    if me.startswith("xttsft.cli") and target not in LIGHT:
        return True  # settings (pydantic, 0.15 s) and the command's core (numpy...): out of `xttsft --help`
    return "must run" in lines[node.lineno - 1] or "guarded" in lines[node.lineno - 1]


def test_first_party_imports_at_the_top():
    lazy = []
    for path in SOURCES:
        me = _module(path)
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        lines = text.splitlines()
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node, target in _imports(fn):
                if not _lazy_allowed(me, target, node, lines):
                    lazy.append(f"{me}:{node.lineno} imports {target} inside {fn.name}()")
    assert not lazy, "move these to the top of the module:\n" + "\n".join(sorted(set(lazy)))


_EACH_FIRST = """
import importlib, sys
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "xttsft" or m.startswith("xttsft.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except ImportError as exc:
        print(f"{name}: {exc}")
"""


def test_every_module_imports_first():
    """An import circle shows as an ImportError when one of its modules is the first imported."""
    modules = sorted({_module(p) for p in SOURCES})
    out = subprocess.run([sys.executable, "-c", _EACH_FIRST, *modules], check=True, capture_output=True, text=True)
    assert out.stdout == ""


def test_help_loads_neither_settings_nor_numpy():
    code = (
        "import sys\nfrom xttsft.cli import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('LOADED', ' '.join(m for m in ('numpy', 'pydantic', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert "Usage" in out and out.strip().endswith("LOADED"), out[-300:]
