"""scripts/gpu_check.py without a GPU: the deadline, the rows that survive a timeout, the process-group
kill, the exit status when nvidia-smi sees a GPU that torch cannot use, and Whisper's CUDA fallback
(issue 19). Real processes throughout; the one stand-in is a small ``nvidia-smi`` script on the PATH,
in place of a driver this machine does not have."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"


@pytest.fixture(scope="module")
def gc():
    """scripts/gpu_check.py as a module (it imports nothing heavy at the top)."""
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod
    spec.loader.exec_module(mod)
    return mod


def _check(*args: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    full = {**os.environ, **(env or {})}
    full.pop("OUT", None)
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=full, cwd=ROOT
    )


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _wait_dead(pids: list[int], seconds: float = 10.0) -> list[int]:
    end = time.monotonic() + seconds
    while time.monotonic() < end and any(_alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def test_the_steps_run_in_the_issues_order(gc) -> None:
    """Headline numbers first, pytest and the slow tails last; each step is in the plan."""
    assert [s.name for s in gc.plan()] == [
        "env",
        "8gb",
        "lora",
        "full",
        "fp16",
        "fp32",
        "pytest",
        "synth",
        "serve",
        "whisper",
    ]
    eight = gc.plan()[1].parts[0].configs
    assert [(c["mode"], c["gc"], c["precision"], c["batch"], c["clip"]) for c in eight] == [
        ("lora", True, "bfloat16", 2, "6s"),
        ("lora", True, "bfloat16", 2, "longest"),
    ]
    lora = gc.plan(rec_batch=32)[2].parts[0].configs
    assert [c["batch"] for c in lora] == [1, 2, 4, 32] and lora[-1]["recommended"]
    assert [c.get("recommended", False) for c in gc.plan(rec_batch=2)[2].parts[0].configs] == [False, True, False]
    fp16 = [c for s in gc.plan() for p in s.parts for c in p.configs if c["precision"] == "float16"]
    assert sorted(c["mode"] for c in fp16) == ["full", "lora"]


def test_the_deadline_skips_what_cannot_fit_and_says_why(tmp_path) -> None:
    """With 1 s of deadline only the environment step runs; every other step is skipped with its
    reason, each configuration gets a row that says so, and the check still exits 0 with a report."""
    p = _check("--cpu", "--deadline", "1", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    steps = {s["step"]: s["status"] for s in report["steps"]}
    assert steps.pop("env") == "ok"
    assert set(steps) == {"8gb", "lora", "full", "fp16", "fp32", "pytest", "synth", "serve", "whisper"}
    for name, status in steps.items():
        assert status.startswith("skipped:") and "left of the deadline" in status, (name, status)
    rows = [json.loads(line) for line in (tmp_path / "gpu_check.jsonl").read_text().splitlines()]
    assert rows and all(r["status"] == "skipped" for r in rows)
    assert report["ratios"]["fits_8gb_card"] is None  # not measured is unknown, never False
    assert len(p.stdout) < 12_000 and "== summary" in p.stdout


def test_rows_written_before_a_timeout_survive(gc, tmp_path) -> None:
    """A step appends a row, then hangs: the timeout kills it and the row is in the report."""
    out = gc.Out(tmp_path)
    child = (
        f"import sys, time; sys.path.insert(0, {str(SCRIPT.parent)!r}); import gpu_check; "
        f"gpu_check.append_row(__import__('pathlib').Path({str(out.jsonl)!r}), "
        "{'id': 'a', 'step': '8gb', 'clip': '6s', 'status': 'ok', 'peak_allocated_gib': 5.1, "
        "'peak_reserved_gib': 5.9}); print('measured', flush=True); time.sleep(120)"
    )
    t0 = time.monotonic()
    ran = gc.run_group([sys.executable, "-c", child], timeout=4, log=out.log)
    assert ran.timed_out and ran.rc == 124 and time.monotonic() - t0 < 30
    assert "measured" in ran.tail
    out.save()
    report = json.loads(out.json.read_text())
    assert [r["id"] for r in report["rows"]] == ["a"]
    assert report["ratios"]["fits_8gb_card"] is True


def test_a_worker_killed_at_its_timeout_leaves_rows_that_say_so(gc, tmp_path) -> None:
    """A real training worker stopped at its timeout (here while it still imports torch): each
    configuration it did not reach gets a 'timeout' row, and the 8 GB verdict is unknown, not False."""
    out = gc.Out(tmp_path)
    ctx = gc.Ctx(
        out,
        gc.Say(),
        "cpu",
        time.monotonic() + 60,
        None,
        {"espeak-ng": None, "ffmpeg": None},
        timed_steps=1,
        arch="tiny",
        extra={"whisper_model": "bundled-tiny.en"},
    )
    step = gc.plan()[1]
    status = gc.run_worker(ctx, step, step.parts[0], timeout=0.5)
    assert status.startswith("timed out")
    out.save()
    rows = json.loads(out.json.read_text())["rows"]
    assert [(r["clip"], r["status"]) for r in rows] == [("6s", "timeout"), ("longest", "timeout")]
    ratios = json.loads(out.json.read_text())["ratios"]
    assert ratios["fits_8gb_card"] is None and ratios["fits_8gb_card_longest_clip"] is None


def test_a_timeout_kills_the_whole_process_group(gc, tmp_path) -> None:
    """The step's child spawns a grandchild; after the timeout neither is alive (subprocess.run's
    timeout kills only the child: a torchrun worker would keep the GPU)."""
    pids = tmp_path / "pids"
    child = (
        "import subprocess, sys, time; "
        "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
        f"open({str(pids)!r}, 'w').write(f'{{__import__(\"os\").getpid()}} {{g.pid}}'); time.sleep(300)"
    )
    ran = gc.run_group([sys.executable, "-c", child], timeout=5, log=tmp_path / "log")
    assert ran.timed_out
    both = [int(x) for x in pids.read_text().split()]
    assert len(both) == 2 and _wait_dead(both) == []


def test_what_a_finished_step_leaves_behind_is_killed(gc, tmp_path) -> None:
    """A step that exits at once but leaves a grandchild running: it is killed with the step's group."""
    pids = tmp_path / "pids"
    child = (
        "import subprocess, sys; "
        "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
        f"open({str(pids)!r}, 'w').write(str(g.pid))"
    )
    ran = gc.run_group([sys.executable, "-c", child], timeout=60, log=tmp_path / "log")
    assert ran.rc == 0 and not ran.timed_out
    assert _wait_dead([int(pids.read_text())]) == []


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="torch can use this machine's GPU")
def test_exit_3_when_nvidia_smi_sees_a_gpu_that_torch_cannot_use(tmp_path) -> None:
    """An nvidia-smi that lists a GPU (a real executable on the PATH standing in for the driver) and a
    torch that cannot use CUDA: the check says so and exits 3 instead of printing the CPU plan."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    smi = bin_ / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        "  *-L*) echo 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-00000000-1111-2222-3333-444444444444)' ;;\n"
        "  *) echo '0, NVIDIA H100 80GB HBM3, 81559, 81000, 9.0' ;;\n"
        "esac\n"
    )
    smi.chmod(0o755)
    p = _check(env={"PATH": f"{bin_}{os.pathsep}{os.environ['PATH']}"}, timeout=120)
    assert p.returncode == 3, p.stdout[-1000:] + p.stderr[-1000:]
    assert "nvidia-smi sees 1 GPU(s) (GPU 0: NVIDIA H100 80GB HBM3" in p.stderr
    assert "cannot use it" in p.stderr and "Hint:" in p.stderr
    assert "would run" not in p.stdout.lower()


def test_training_leaves_the_whisper_packages_out() -> None:
    """What the training steps import does not load av or ctranslate2: they can travel apart."""
    p = _check("--check-imports")
    assert p.returncode == 0, p.stdout + p.stderr[-2000:]
    assert "load none of av, ctranslate2, faster_whisper" in p.stdout


@pytest.mark.skipif(__import__("ctranslate2").get_cuda_device_count() > 0, reason="CTranslate2 can use CUDA here")
def test_whisper_asked_for_cuda_it_cannot_use_runs_on_the_cpu_with_one_warning(tmp_path) -> None:
    """load_whisper on cuda where CTranslate2 cannot run CUDA (here: no GPU; on a CUDA 13 machine:
    no libcublas.so.12): the model loads on the CPU in int8, one warning says why and what to do, and
    it transcribes."""
    code = (
        "import logging, numpy as np\n"
        "from xttsft.bundled_whisper import tiny_en_path\n"
        "from xttsft.data.transcribe import load_whisper, transcribe_clips\n"
        "m = load_whisper(str(tiny_en_path()), device='cuda', compute_type='float16')\n"
        "load_whisper(str(tiny_en_path()), device='cuda', compute_type='float16')\n"
        "print('device', m.model.device, m.model.compute_type)\n"
        "out = transcribe_clips(m, [np.zeros(16000, dtype=np.float32)], 'en', batch_size=1)\n"
        "print('clips', len(out))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "device cpu int8" in p.stdout and "clips 1" in p.stdout
    warnings = [ln for ln in p.stderr.splitlines() if "Whisper cannot use CUDA here" in ln]
    assert len(warnings) == 1, p.stderr[-2000:]
    assert "CUDA" in warnings[0].split("here (", 1)[1] and "on the CPU in int8" in warnings[0]
    assert "--device cpu" in warnings[0]


SERVE_STAND_IN = """import json, sys
from pathlib import Path

args = sys.argv[1:]
out = Path(args[args.index("--out") + 1])
Path(out.parent / "serve_argv.json").write_text(json.dumps(args))
row = dict(model="full", ttfa_1_p50_s=0.15, ttfa_1_p95_s=0.18, ttfa_4_p50_s=0.4, ttfa_4_p95_s=0.6, speech_s=5.6)
rows = [dict(row, server="xttsft", rtf_1=0.3), dict(row, server="coqui", ttfa_1_p50_s=1.9, rtf_1=0.2)]
ratios = {"full_ttfa_1_p50_s_goal_0.2": "met", "full_rtf_1_goal_0.25": "missed"}
out.write_text(json.dumps(dict(name="serve_cuda (card)", rows=rows, ratios=ratios)))
"""


def test_the_serve_step_runs_the_benchmark_on_the_device_and_its_figures_reach_the_report(
    gc, tmp_path, monkeypatch
) -> None:
    """The serve step runs benchmarks/serve.py (here a stand-in that records its arguments and writes a result
    like the real one) with the device, the GPU's sizes, the carried reference and --out in the check's folder;
    the figures and the goals land in the report and on stdout. That the real benchmark accepts these
    arguments is checked by its --help below."""
    (tmp_path / "root" / "benchmarks").mkdir(parents=True)
    (tmp_path / "root" / "benchmarks" / "serve.py").write_text(SERVE_STAND_IN)
    monkeypatch.setattr(gc, "ROOT", tmp_path / "root")
    audio = tmp_path / "audio"
    audio.mkdir()
    (audio / "ref.wav").write_bytes(b"RIFF")
    out, said = gc.Out(tmp_path / "out"), []
    ctx = gc.Ctx(out, said.append, "cuda", time.monotonic() + 60, audio, {"espeak-ng": None, "ffmpeg": None})
    assert gc.run_serve(ctx, timeout=30) == "ok"
    argv = json.loads((tmp_path / "out" / "serve_argv.json").read_text())
    assert argv[argv.index("--device") + 1] == "cuda" and argv[argv.index("--models") + 1] == "full"
    assert argv[argv.index("--out") + 1] == str(tmp_path / "out" / "serve_cuda.json")
    assert argv[argv.index("--reference") + 1] == str(audio / "ref.wav")
    out.save()
    ratios = json.loads(out.json.read_text())["ratios"]
    assert ratios["serve_full_ttfa_1_p50_s_goal_0.2"] == "met" and ratios["serve_full_rtf_1_goal_0.25"] == "missed"
    assert "xttsft: first audio 0.15/0.18 s (1 stream p50/p95), 0.4/0.6 s (4), RTF 0.3" in ratios["serve"]
    assert "coqui: first audio 1.9/0.18 s" in ratios["serve"]
    assert any("goals (200 ms, RTF 0.25): ttfa_1_p50_s met, rtf_1 missed" in line for line in said)

    help_ = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "serve.py"), "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert help_.returncode == 0, help_.stderr[-2000:]
    flags = [a for a in argv if a.startswith("--")]
    assert flags and all(f in help_.stdout for f in flags), (flags, help_.stdout)


def test_the_serve_step_without_its_web_stack_is_skipped_with_the_reason(gc, tmp_path, monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    ctx = gc.Ctx(gc.Out(tmp_path), gc.Say(), "cuda", time.monotonic() + 60, None, {"espeak-ng": "x", "ffmpeg": "x"})
    reason = gc._skip_reason(ctx, next(s for s in gc.plan() if s.name == "serve"))
    assert reason is not None and reason.startswith("uvicorn not installed") and "gpu_bundle.sh" in reason


def test_verdicts_never_turn_a_failure_into_false(gc) -> None:
    """The 8 GB verdict: fits by peak reserved, does not by peak allocated, unknown in between and
    for a row that errored, timed out or was skipped."""

    def verdict(**row) -> object:
        return gc.verdicts([{"step": "8gb", "clip": "6s", **row}])["fits_8gb_card"]

    assert verdict(status="ok", peak_allocated_gib=5.2, peak_reserved_gib=6.1) is True
    assert verdict(status="ok", peak_allocated_gib=7.4, peak_reserved_gib=7.9) is False
    assert verdict(status="ok", peak_allocated_gib=6.5, peak_reserved_gib=7.5) is None
    assert verdict(status="oom") is False
    for failed in ("error", "timeout", "skipped"):
        assert verdict(status=failed, error="RuntimeError: boom") is None
    assert gc.verdicts([])["fits_8gb_card"] is None
