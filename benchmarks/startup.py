"""How long `xttsft --help` takes to answer: this tree against an older commit, side by side.

The older commit (default: 1644ebf, before issue 20 generated the options from the settings and
grouped the modules) is checked out in a temporary git worktree and run with the same Python and
packages through ``PYTHONPATH``. Each round runs every command once per version, the versions in
alternating order, each in a new process. CPU time (user + system of the child) is what the code
costs; wall time adds the machine's load.

    python benchmarks/startup.py              # 20 rounds
    python benchmarks/startup.py --rounds 5 --ref HEAD~3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from rich.console import Console
from rich.table import Table

from _common import machine

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
COMMANDS = (["--help"], ["train", "--help"])


def _run_once(src: Path, args: list[str]) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": str(src), "COLUMNS": "80", "TERM": "dumb"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "xttsft", *args], env=env, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _measure(versions: dict[str, Path], rounds: int) -> dict[tuple[str, str], list[tuple[float, float]]]:
    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    names = list(versions)
    for _ in range(2):  # warm the bytecode caches of both trees
        for name in names:
            for args in COMMANDS:
                _run_once(versions[name], args)
    for i in range(rounds):
        for name in names if i % 2 == 0 else reversed(names):
            for args in COMMANDS:
                times.setdefault((" ".join(args), name), []).append(_run_once(versions[name], args))
    return times


def _rows(times: dict[tuple[str, str], list[tuple[float, float]]]) -> list[dict]:
    rows = []
    for (cmd, name), runs in times.items():
        walls, cpus = [w for w, _ in runs], [c for _, c in runs]
        rows.append(
            {
                "command": f"xttsft {cmd}",
                "version": name,
                "wall_min_s": round(min(walls), 3),
                "wall_median_s": round(statistics.median(walls), 3),
                "cpu_min_s": round(min(cpus), 3),
                "cpu_median_s": round(statistics.median(cpus), 3),
            }
        )
    return sorted(rows, key=lambda r: (r["command"], r["version"] != "before"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", default="1644ebf", help="the older commit to compare with (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-f", "--detach", str(old), args.ref], check=True)
        try:
            times = _measure({"before": old / "src", "after": ROOT / "src"}, args.rounds)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False)
    rows = _rows(times)
    by = {(r["command"], r["version"]): r for r in rows}
    ratios = {
        f"{cmd}_cpu_median_after_vs_before": round(
            by[(cmd, "after")]["cpu_median_s"] / by[(cmd, "before")]["cpu_median_s"], 2
        )
        for cmd in {r["command"] for r in rows}
    }
    load = os.getloadavg()[0]
    table = Table(title=f"xttsft startup: {args.rounds} rounds, before = {args.ref}, load average {load:.1f}")
    for c in rows[0]:
        table.add_column(c, justify="left" if c in ("command", "version") else "right")
    for r in rows:
        table.add_row(*[str(v) for v in r.values()])
    console.print(table)
    for k, v in ratios.items():
        console.print(f"{k}: [bold]{v}x[/]")
    result = {
        "name": "CLI startup",
        "date": date.today().isoformat(),
        "machine": machine(),
        "notes": (
            f"`python -m xttsft --help` and `train --help` at 80 columns, each in a new process, {args.rounds} "
            f"rounds alternating before ({args.ref}) and after (this tree), same Python and packages; "
            f"cpu = user + system time of the process. Load average at the end: {load:.1f} "
            "(2 shared CPUs: the wall time is about the CPU time on an idle machine, twice it under load). "
            "Goal: `xttsft --help` under 0.3 s."
        ),
        "rows": rows,
        "ratios": ratios,
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "startup.json").write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {HERE / 'results' / 'startup.json'}")


if __name__ == "__main__":
    main()
