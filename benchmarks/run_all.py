"""Run every benchmark in this folder and write benchmarks/RESULTS.md.

Each benchmark script compares our way with the naive or upstream way in one
run, prints a table and writes ``benchmarks/results/<name>.json``::

    {"name": ..., "date": ..., "machine": ..., "rows": [{...}], "ratios": {...}}

This script runs them one after the other (never in parallel: they measure
time and memory) and gathers those files into RESULTS.md.

    python benchmarks/run_all.py            # all of them
    python benchmarks/run_all.py segment    # only benchmarks/segment.py
    python benchmarks/run_all.py --report   # only rebuild RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def scripts(names: list[str]) -> list[Path]:
    found = sorted(p for p in HERE.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_"))
    if names:
        found = [p for p in found if p.stem in names]
    return found


def _cell(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v).replace("|", "\\|")


def render(results: list[dict]) -> str:
    out = [
        "# Benchmark results",
        "",
        "Written by `make bench` (`python benchmarks/run_all.py`). Each benchmark runs our way and the",
        "naive or upstream way side by side in one process run, on the same data, and reports the ratio.",
        "Numbers are from one run on the machine named under each heading; machines are noisy, so treat",
        "small differences as noise.",
        "",
    ]
    for r in results:
        out += [f"## {r.get('name', '?')}", "", f"- date: {r.get('date', '?')}", f"- machine: {r.get('machine', '?')}"]
        if r.get("notes"):
            out.append(f"- notes: {r['notes']}")
        out.append("")
        rows = r.get("rows") or []
        if rows:
            cols: list[str] = []
            for row in rows:
                cols += [k for k in row if k not in cols]
            out.append("| " + " | ".join(cols) + " |")
            out.append("|" + "---|" * len(cols))
            for row in rows:
                out.append("| " + " | ".join(_cell(row.get(c, "")) for c in cols) + " |")
            out.append("")
        for k, v in (r.get("ratios") or {}).items():
            out.append(f"- **{k}**: {_cell(v)}")
        out.append("")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="benchmark names (file stems); default: all")
    ap.add_argument("--report", action="store_true", help="only rebuild RESULTS.md from results/*.json")
    args = ap.parse_args()
    failed = []
    if not args.report:
        for script in scripts(args.names):
            print(f"\n=== {script.name}", flush=True)
            t0 = time.perf_counter()
            rc = subprocess.call([sys.executable, str(script)])
            print(f"=== {script.name}: exit {rc} in {time.perf_counter() - t0:.0f} s", flush=True)
            if rc != 0:
                failed.append(script.name)
    results = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    (HERE / "RESULTS.md").write_text(render(results), encoding="utf-8")
    print(f"\nwrote {HERE / 'RESULTS.md'} ({len(results)} benchmarks)")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
