"""Serving benchmark: ``xttsft serve`` against coqui's own server on the same model folder.

Two servers on 127.0.0.1, each a subprocess, load one model folder (written here, random weights):

* **xttsft** ``xttsft serve --model FOLDER``: streams sentence by sentence (and in chunks of
  ``--chunk`` audio codes within a sentence), requests take turns;
* **coqui** ``python -m TTS.server.server --model_path FOLDER`` (coqui-tts's Flask server, which
  has its own ``/v1/audio/speech``): one global lock, the whole file at the end. It needs flask
  (``pip install 'coqui-tts[server]'``, or ``--coqui-pythonpath DIR`` holding flask); without it,
  or if it cannot load the folder, the reason is recorded and plain ``Xtts.inference`` per
  request (what that server runs) is measured in process instead.

Both get the same requests (a two-sentence text, ``wav``, the folder's own voice) through the
same client. Time to first audio (first body byte) p50/p95 for 1 stream and 4 concurrent streams,
and the real-time factor (request seconds / audio seconds, one stream), in alternating rounds so
a busy machine slows both alike. Models: the tiny architecture and XTTS-v2's full-size one, both
with random weights; a random GPT never emits STOP, so the folder's config caps the audio codes
per sentence (``--tokens``) and both servers generate exactly that many.

Also measured: the response encoder, one PyAV muxer per response against an ffmpeg pipe per
response (what the server uses: PyAV).

On a GPU (``--device cuda``, what ``scripts/gpu_check.py``'s serve step runs) the results go to
``--out`` (default ``results/serve_cuda.json``) and RESULTS.md is left to ``run_all.py --report``;
the result file is rewritten after every round, so a run stopped at a deadline keeps what it measured.
Its ratios hold the issue's GPU goals: first audio under 200 ms and RTF at most 0.25, one stream.

    python benchmarks/serve.py                       # tiny and full, 16 codes, 2 rounds
    python benchmarks/serve.py --models tiny --rounds 1
    python benchmarks/serve.py --device cuda --models full --tokens 60 --chunk 20 --rounds 1 \\
        --per-stream 4 --no-encoders --reference .whl/audio/ref.wav   # what gpu_check runs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

from _common import machine, make_reference

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: The issue's goals on a GPU, one stream: first audio chunk under 200 ms, real-time factor at most 0.25.
GPU_GOALS = {"ttfa_1_p50_s": 0.2, "rtf_1": 0.25}
TEXT = "The quick brown fox jumps over the lazy dog. Then it rests for a while in the shade of a tree."
VOICE = "bench"


def build_folder(dest: Path, kind: str, tokens: int, reference: Path) -> tuple[Path, int]:
    """A standard XTTS-v2 folder with random weights: the tiny architecture or the full-size one,
    its config capping the audio codes per sentence at ``tokens`` (coqui: max_gen = max - 3)."""
    import torch
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
    from TTS.tts.models.xtts import Xtts

    from xttsft import model as xm
    from xttsft.voice.synth import REFERENCE_SAMPLE_RATE, load_reference

    tiny = xm.resolve_base_model("tiny")
    config = XttsConfig()
    if kind == "tiny":
        config.load_json(str(tiny / "config.json"))
    config.model_args.gpt_max_audio_tokens = tokens + 3
    config.model_args.tokenizer_file = ""
    torch.manual_seed(0)
    model = Xtts(config)
    model.tokenizer = VoiceBpeTokenizer(vocab_file=str(tiny / "vocab.json"))
    model.init_models()
    dest.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict()}, dest / "model.pth")  # before eval() adds the inference GPT
    model.eval()
    config.save_json(str(dest / "config.json"))
    for name in ("vocab.json", "dvae.pth", "mel_stats.pth"):  # dvae and mel stats: unused at inference
        shutil.copy(tiny / name, dest / name)
    # the clip read by soundfile, not coqui's torchaudio.load (which needs FFmpeg's libraries: the lent GPU
    # machine has none); then what Xtts.get_conditioning_latents does with it
    audio = torch.from_numpy(load_reference(reference))[None, : REFERENCE_SAMPLE_RATE * config.max_ref_len]
    with torch.inference_mode():
        speaker = model.get_speaker_embedding(audio, REFERENCE_SAMPLE_RATE)
        latent = model.get_gpt_cond_latents(
            audio, REFERENCE_SAMPLE_RATE, length=config.gpt_cond_len, chunk_length=config.gpt_cond_chunk_len
        )
    torch.save({VOICE: {"gpt_cond_latent": latent, "speaker_embedding": speaker}}, dest / "speakers_xtts.pth")
    shutil.copy(reference, dest / "reference.wav")
    params = sum(p.numel() for p in model.parameters())
    del model
    return dest, params


def http():
    """httpx2 (the project's client), else httpx (the lent GPU machine's image has httpx only)."""
    try:
        import httpx2

        return httpx2
    except ImportError:
        import httpx

        return httpx


class Server:
    """A server subprocess, its log, and its base URL."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], url: str, log: Path) -> None:
        self.name, self.url, self.log = name, url, log
        self.proc = subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=log.parent)

    def wait_ready(self, probe: str, timeout: float = 900) -> float:
        httpx2 = http()
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: " + self.log.read_text(errors="replace")[-2000:])
            try:
                if httpx2.get(self.url + probe, timeout=5).status_code == 200:
                    return time.monotonic() - t0
            except httpx2.TransportError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} was not ready after {timeout} s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def free_port() -> int:
    from xttsft.voice.serve.background import free_port as fp

    return fp()


def start_ours(folder: Path, work: Path, chunk: int, device: str = "cpu") -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVE_", "SYNTH_"))}
    env.update(
        {
            "SERVE_STREAM_CHUNK_SIZE": str(chunk),
            "SERVE_MAX_STREAMS": "4",
            "SYNTH_DEVICE": device,
            "SYNTH_SENTENCE_PAUSE": "0.1",
        }
    )
    cmd = [sys.executable, "-m", "xttsft", "--workdir", str(work), "serve", "--model", str(folder), "--port", str(port)]
    return Server("xttsft", cmd, env, f"http://127.0.0.1:{port}", work / "xttsft-serve.log")


def start_coqui(folder: Path, work: Path, pythonpath: str | None, device: str = "cpu") -> Server:
    port = free_port()
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [
        sys.executable,
        "-m",
        "TTS.server.server",
        "--model_path",
        str(folder),
        "--config_path",
        str(folder / "config.json"),
        "--port",
        str(port),
        "--device",
        device,
        "--language_idx",
        "en",
    ]
    return Server("coqui", cmd, env, f"http://127.0.0.1:{port}", work / "coqui-server.log")


def wav_seconds(body: bytes) -> float:
    """Seconds of 16-bit mono audio in a WAV, streamed (unknown sizes) or not."""
    import struct

    rate = struct.unpack("<I", body[24:28])[0]
    data = body.find(b"data")
    return (len(body) - data - 8) / 2 / rate if data > 0 else 0.0


def one_request(url: str) -> dict[str, float]:
    httpx2 = http()
    body = {"model": "tts-1", "voice": VOICE, "input": TEXT, "response_format": "wav"}
    t0 = time.perf_counter()
    first = None
    parts = []
    with httpx2.stream("POST", url + "/v1/audio/speech", json=body, timeout=900) as r:
        r.raise_for_status()
        for chunk in r.iter_bytes():
            if first is None and chunk:
                first = time.perf_counter() - t0
            parts.append(chunk)
    total = time.perf_counter() - t0
    return {"ttfa": first or total, "total": total, "audio": wav_seconds(b"".join(parts))}


def run_set(url: str, streams: int, requests: int) -> list[dict[str, float]]:
    """``requests`` requests per stream, ``streams`` clients at once."""
    out: list[dict[str, float]] = []
    lock = threading.Lock()

    def client() -> None:
        for _ in range(requests):
            got = one_request(url)
            with lock:
                out.append(got)

    threads = [threading.Thread(target=client) for _ in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


def compare(servers: list[Server], rounds: int, per_stream: int, progress=None) -> dict[str, dict[str, list]]:
    """Alternating rounds: in round r the order of the servers flips; ``progress(res)`` after each set."""
    res: dict[str, dict[str, list]] = {s.name: {"one": [], "four": []} for s in servers}
    for s in list(servers):  # one request each first: nothing below pays a first-call cost
        try:
            one_request(s.url)
        except Exception as exc:  # noqa: BLE001 - the other server's figures still count
            if s.name == "xttsft":
                raise
            print(f"  {s.name} failed its first request ({exc}): left out", flush=True)
            servers.remove(s)
            del res[s.name]
    for r in range(rounds):
        for s in servers if r % 2 == 0 else servers[::-1]:
            res[s.name]["one"] += run_set(s.url, 1, per_stream)
            res[s.name]["four"] += run_set(s.url, 4, max(1, per_stream // 2))
            print(f"  round {r + 1}: {s.name} done", flush=True)
            if progress is not None:
                progress(res)
    return res


def inference_baseline(folder: Path, rounds: int, per_stream: int, device: str = "cpu") -> dict[str, list]:
    """What coqui's server runs per request, in this process: Xtts.synthesize under one lock."""
    import torch
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.models.xtts import Xtts

    config = XttsConfig()
    config.load_json(str(folder / "config.json"))
    model = Xtts.init_from_config(config)
    model.load_checkpoint(config, checkpoint_dir=str(folder), eval=True)
    model.to(device)
    lock = threading.Lock()

    def request() -> dict[str, float]:
        t0 = time.perf_counter()
        with lock, torch.inference_mode():
            wav = model.synthesize(TEXT, config, speaker_wav=None, language="en", speaker_id=VOICE)["wav"]
        total = time.perf_counter() - t0
        return {"ttfa": total, "total": total, "audio": len(wav) / 24000}

    out: dict[str, list] = {"one": [], "four": []}
    for _ in range(rounds):
        out["one"] += [request() for _ in range(per_stream)]
        results: list[dict[str, float]] = []

        def client(sink: list[dict[str, float]] = results) -> None:
            sink.extend(request() for _ in range(max(1, per_stream // 2)))

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out["four"] += results
    return out


#: Silence each server adds to the two-sentence text: xttsft's sentence_pause (0.1 s here) between the
#: sentences; coqui's Synthesizer 10000 samples after each sentence. RTF counts speech seconds only.
PADDING_S = {"xttsft": 0.1, "coqui": 2 * 10000 / 24000, "Xtts.synthesize per request": 0.0}


def rows_for(model: str, res: dict[str, dict[str, list]]) -> list[dict]:
    rows = []
    for name, sets in res.items():
        one, four = sets["one"], sets["four"]
        if not one or not four:
            continue
        pad = PADDING_S.get(name, 0.0)
        rtf = statistics.median(r["total"] / (r["audio"] - pad) for r in one if r["audio"] > pad)
        rows.append(
            {
                "model": model,
                "server": name,
                "ttfa_1_p50_s": round(pct([r["ttfa"] for r in one], 0.5), 3),
                "ttfa_1_p95_s": round(pct([r["ttfa"] for r in one], 0.95), 3),
                "ttfa_4_p50_s": round(pct([r["ttfa"] for r in four], 0.5), 3),
                "ttfa_4_p95_s": round(pct([r["ttfa"] for r in four], 0.95), 3),
                "rtf_1": round(rtf, 2),
                "speech_s": round(statistics.median(r["audio"] for r in one) - pad, 2),
                "requests": len(one) + len(four),
            }
        )
    return rows


def bench_model(
    kind: str, args: argparse.Namespace, work: Path, reference: Path, notes: list[str], progress=None
) -> list[dict]:
    """Both servers on one model folder; ``progress(rows)`` with the rows so far after every set."""
    print(f"{kind}: writing a random-weights model folder ({args.tokens} audio codes per sentence) ...", flush=True)
    folder, params = build_folder(work / f"{kind}-model", kind, args.tokens, reference)
    notes.append(f"{kind}: {params / 1e6:.1f} M parameters, {args.tokens} audio codes per sentence, 2 sentences")
    ours = start_ours(folder, work, args.chunk, args.device)
    coqui = start_coqui(folder, work, args.coqui_pythonpath, args.device)
    servers, ready = [ours], {}
    try:
        ready["xttsft"] = ours.wait_ready("/readyz")
        try:
            ready["coqui"] = coqui.wait_ready("/locales")
            servers.append(coqui)
        except RuntimeError as exc:
            why = " ".join(str(exc).split())[-400:]
            notes.append(
                f"{kind}: coqui's TTS/server/server.py did not serve the folder ({why}); compared with "
                "plain Xtts.synthesize per request under one lock, which is what it runs"
            )
        print(f"{kind}: servers ready {ready}", flush=True)
        res = compare(servers, args.rounds, args.per_stream, progress and (lambda got: progress(rows_for(kind, got))))
    finally:
        for s in (ours, coqui):
            s.stop()
    if "coqui" in ready and "coqui" not in res:
        notes.append(f"{kind}: coqui's server loaded but failed its first request (its log: coqui-server.log)")
    if "coqui" not in res:
        res["Xtts.synthesize per request"] = inference_baseline(folder, args.rounds, args.per_stream, args.device)
    shutil.rmtree(folder, ignore_errors=True)
    return rows_for(kind, res)


def bench_encoders(rounds: int = 3, chunks: int = 20) -> tuple[list[dict], dict[str, float]]:
    """One response (``chunks`` x 0.25 s of audio) per format and backend, alternating: wall time
    and time to the first encoded byte."""
    import numpy as np

    from xttsft.voice.serve.encode import open_encoder

    rng = np.random.default_rng(0)
    audio = [
        (0.2 * np.sin(np.arange(6000) * 0.05 * (i + 1)) + 0.01 * rng.standard_normal(6000)).astype(np.float32)
        for i in range(chunks)
    ]
    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r in range(rounds):
        for fmt in ("mp3", "opus", "aac", "flac"):
            for backend in ("pyav", "ffmpeg") if r % 2 == 0 else ("ffmpeg", "pyav"):
                t0 = time.perf_counter()
                first = None
                enc = open_encoder(fmt, backend=backend)
                for a in audio:
                    if enc.encode(a) and first is None:
                        first = time.perf_counter() - t0
                enc.close()
                total = time.perf_counter() - t0
                times.setdefault((fmt, backend), []).append((first or total, total))
    rows, ratios = [], {}
    for (fmt, backend), got in sorted(times.items()):
        rows.append(
            {
                "model": "encoder",
                "server": f"{fmt} {backend}",
                "first_byte_ms": round(1000 * statistics.median(g[0] for g in got), 1),
                "response_ms": round(1000 * statistics.median(g[1] for g in got), 1),
            }
        )
    for fmt in ("mp3", "opus", "aac", "flac"):
        py = statistics.median(g[1] for g in times[(fmt, "pyav")])
        ff = statistics.median(g[1] for g in times[(fmt, "ffmpeg")])
        ratios[f"encoder_{fmt}_ffmpeg_pipe_over_pyav"] = round(ff / py, 2)
    return rows, ratios


def model_ratios(rows: list[dict]) -> dict[str, float]:
    out = {}
    for model in sorted({r["model"] for r in rows if r["model"] != "encoder"}):
        ours = next(r for r in rows if r["model"] == model and r["server"] == "xttsft")
        other = next((r for r in rows if r["model"] == model and r["server"] != "xttsft"), None)
        if other is None:
            continue
        for key in ("ttfa_1_p50_s", "ttfa_4_p50_s", "ttfa_4_p95_s", "rtf_1"):
            out[f"{model}_{key}_coqui_over_xttsft"] = round(other[key] / ours[key], 2) if ours[key] else float("nan")
    return out


def write_results(result: dict) -> None:
    """results/serve.json, and the serve section of RESULTS.md (the other sections are left alone)."""
    import re

    sys.path.insert(0, str(HERE))
    from run_all import render

    out = HERE / "results" / "serve.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    section = render([result]).split("\n## ", 1)[1]
    md = HERE / "RESULTS.md"
    text = md.read_text(encoding="utf-8")
    if re.search(r"^## serve$", text, re.M):
        text = re.sub(r"^## serve\n.*?(?=^## |\Z)", "## " + section.rstrip("\n") + "\n\n", text, flags=re.M | re.S)
    else:
        at = re.search(r"^## synth$", text, re.M)
        pos = at.start() if at else len(text)
        text = text[:pos] + "## " + section.rstrip("\n") + "\n\n" + text[pos:]
    md.write_text(text, encoding="utf-8")
    print(f"wrote {out} and the serve section of {md}")


def goals(rows: list[dict]) -> dict:
    """The issue's GPU goals against xttsft's rows: first audio p50 and RTF, one stream."""
    out: dict = {}
    for r in rows:
        if r.get("server") != "xttsft":
            continue
        for key, limit in GPU_GOALS.items():
            out[f"{r['model']}_{key}_goal_{limit}"] = "met" if r[key] <= limit else "missed"
    return out


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,full", help="tiny, full or both (comma-separated)")
    parser.add_argument("--tokens", type=int, default=16, help="audio codes per sentence (the folder's cap)")
    parser.add_argument("--chunk", type=int, default=8, help="xttsft's stream_chunk_size (audio codes per chunk)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    parser.add_argument("--per-stream", type=int, default=2, help="requests per round with 1 stream (4 streams: half)")
    parser.add_argument("--coqui-pythonpath", default=None, help="a folder with flask, for coqui's server")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where both servers run the model")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="result file (default results/serve.json on the CPU, which also updates RESULTS.md; "
        "results/serve_cuda.json on a GPU, left to run_all.py --report)",
    )
    parser.add_argument(
        "--reference", type=Path, default=None, help="the voice's clip (default: spoken here by espeak-ng)"
    )
    parser.add_argument(
        "--no-encoders", action="store_true", help="skip the encoder comparison (it needs ffmpeg; CPU-side figures)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave results/ and RESULTS.md alone")
    return parser.parse_args()


def _notes(args: argparse.Namespace) -> list[str]:
    return [
        f"{args.rounds} alternating rounds; per round {args.per_stream} requests with 1 stream and "
        f"4 x {max(1, args.per_stream // 2)} with 4 concurrent streams; wav; time to first audio = first body byte",
        f"device {args.device}; xttsft: stream_chunk_size {args.chunk}, max_streams 4; coqui: TTS/server/server.py "
        "(Flask, one lock)",
        "coqui's server loaded the folder (TTS(model_path=FOLDER)) and answered its own /v1/audio/speech: the whole "
        "wav at the end, 10000 samples of silence after each sentence (RTF counts speech only); it listens on '::' "
        "(every interface) without a key and opens any path a request names as voice",
        "RTF on the tiny model: each streamed chunk decodes every code so far again (coqui's inference_stream loop), "
        "and HiFi-GAN is most of the tiny model's cost; with the full-size GPT the decoder matters less. "
        "stream_chunk_size 0 decodes once per sentence",
    ]


def _result(args: argparse.Namespace, rows: list[dict], ratios: dict, notes: list[str]) -> dict:
    name = "serve"
    if args.device == "cuda":
        import torch

        name = f"serve_cuda ({torch.cuda.get_device_name(0)})"
    return {
        "name": name,
        "date": date.today().isoformat(),
        "machine": machine(),
        "device": args.device,
        "rows": rows,
        "ratios": {**model_ratios(rows), **(goals(rows) if args.device == "cuda" else {}), **ratios},
        "notes": notes + [f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count() or 0} CPUs"],
    }


def save_to(out: Path, result: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out)


def main() -> int:
    args = _arguments()
    out = args.out or (HERE / "results" / "serve_cuda.json" if args.device == "cuda" else None)
    work = Path(tempfile.mkdtemp(prefix="xttsft-serve-bench-"))
    notes, rows = _notes(args), []
    enc_rows: list[dict] = []
    enc_ratios: dict = {}

    def progress(partial: list[dict]) -> None:  # a run stopped at a deadline keeps what it measured
        if out is not None and not args.no_write:
            save_to(out, _result(args, rows + partial, {}, notes))

    try:
        reference = args.reference or make_reference(work / "ref.wav")
        for kind in args.models.split(","):
            rows += bench_model(kind.strip(), args, work, reference, notes, progress)
            progress([])
        if args.no_encoders or shutil.which("ffmpeg") is None:
            notes.append("encoders: not measured here (--no-encoders, or no ffmpeg for the pipe)")
        else:
            enc_rows, enc_ratios = bench_encoders()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = _result(args, rows + enc_rows, enc_ratios, notes)
    for r in result["rows"]:
        print(r)
    for k, v in result["ratios"].items():
        print(f"ratio {k}: {v}")
    if args.no_write:
        return 0
    if out is not None:
        save_to(out, result)
        print(f"wrote {out}")
    else:
        write_results(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
