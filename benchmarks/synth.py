"""Synthesis benchmark on the full-size XTTS-v2 architecture (random weights).

Side by side, in one run, with the same text, reference clip, seed and a cap on
the audio tokens (a random GPT never emits STOP, so every row generates exactly
the cap and the rows are comparable):

* **stock** ``Xtts.synthesize(text, speaker_wav=...)``: coqui's upstream call,
  which recomputes the conditioning latents on every call;
* **xttsft** ``synth.speak`` with the conditioning latents computed once and
  cached (what ``xttsft synth`` does on every call after the first);
* LoRA (r=8 on c_attn, c_proj, c_fc) **unmerged** (PEFT layers at inference)
  vs **merged** into the GPT (what ``load_finetuned`` and ``xttsft export`` do);
* first-chunk latency of ``Xtts.inference_stream`` (``--stream-chunk`` tokens, 20 as
  coqui's default) vs the time to the whole audio; it runs only when ``--tokens`` exceeds
  the chunk, or the "first chunk" would be the whole utterance.

One untimed synthesis runs first (``--no-warmup`` skips it), so CUDA's start-up is not
billed to the first row. RTF = synthesis seconds / audio seconds (lower is faster).

    python benchmarks/synth.py            # 24 audio tokens (~1.1 s of audio), best of 2
    python benchmarks/synth.py --quick    # 12 tokens, 1 repeat
    python benchmarks/synth.py --device cuda --tokens 120 --repeats 1   # what gpu_check runs:
                                          # results/synth_cuda.json, never the CPU's synth.json

On a shared CPU the load average is recorded with the figures: compare ratios, not seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from _common import machine, make_reference

HERE = Path(__file__).resolve().parent
TEXT = "The quick brown fox jumps over the lazy dog, and then it rests in the shade."


def full_size_xtts(device: str):
    """XTTS-v2's default architecture (GPT 30 x 1024, HiFi-GAN) with random weights.

    The text vocabulary is the tiny model's (256 tokens): the real one has 6681,
    which changes only the size of the text embedding, not the speed."""
    import torch
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
    from TTS.tts.models.xtts import Xtts

    from xttsft import model as xm

    tiny = xm.resolve_base_model("tiny")
    config = XttsConfig()
    config.model_args.tokenizer_file = str(tiny / "vocab.json")
    torch.manual_seed(0)
    model = Xtts(config)
    model.tokenizer = VoiceBpeTokenizer(vocab_file=str(tiny / "vocab.json"))
    model.init_models()
    model.gpt.init_gpt_for_inference(kv_cache=True, use_deepspeed=False)
    model.eval()
    return model.to(device)


def timed(fn, repeats: int) -> tuple[float, int]:
    """(best seconds of ``repeats`` calls, audio samples of the last call)."""
    best, n = float("inf"), 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        wav = fn()
        best = min(best, time.perf_counter() - t0)
        n = len(wav)
    return best, n


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="12 audio tokens, 1 repeat")
    parser.add_argument("--tokens", type=int, default=None, help="audio tokens per synthesis (default 24, quick 12)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: cuda when torch sees a GPU, else cpu"
    )
    parser.add_argument(
        "--stream-chunk",
        type=int,
        default=20,
        help="inference_stream's stream_chunk_size; the first-chunk row runs when --tokens exceeds it",
    )
    parser.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help="skip the untimed synthesis that pays CUDA's start-up before the first timed row",
    )
    parser.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="reference clip (WAV); default: spoken by espeak-ng (needs espeak-ng and ffmpeg)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="result file (default results/synth.json on cpu, results/synth_cuda.json on cuda)",
    )
    return parser.parse_args()


def _device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        from xttsft.errors import SettingsError

        raise SettingsError("--device cuda, but torch sees no CUDA GPU.", hint="Use --device cpu or auto.")
    return choice


def _stock_row(model, ref: Path, sampling: dict, repeats: int, row) -> None:
    """coqui's own call, latents recomputed per call; it reads the clip with torchaudio.load, which needs
    torchcodec and FFmpeg's libraries: where they are missing the row says so instead of failing the run."""
    import torch

    def stock():
        torch.manual_seed(0)
        return model.synthesize(TEXT, speaker_wav=str(ref), language="en", **sampling)["wav"]

    try:
        secs, n = timed(stock, repeats)
    except Exception as exc:  # noqa: BLE001 - ImportError/RuntimeError from torchaudio's loader
        row(
            "stock Xtts.synthesize (latents per call)",
            float("nan"),
            0,
            error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}",
        )
        return
    row("stock Xtts.synthesize (latents per call)", secs, n)


def _first_chunk(model, cond, chunk: int, repeats: int, sync) -> tuple[float, int]:
    """(best seconds to the first chunk of ``inference_stream``, that chunk's samples)."""
    import torch

    best, samples = float("inf"), 0
    for _ in range(repeats):
        torch.manual_seed(0)
        t0 = time.perf_counter()
        for wav in model.inference_stream(
            TEXT.lower(), "en", cond.gpt_cond_latent, cond.speaker_embedding, stream_chunk_size=chunk
        ):
            sync()
            best, samples = min(best, time.perf_counter() - t0), len(wav)
            break
    return best, samples


def main() -> None:
    args = _arguments()
    tokens = args.tokens or (12 if args.quick else 24)
    repeats = args.repeats or (1 if args.quick else 2)

    import torch
    from rich.console import Console

    from xttsft.settings import SynthSettings
    from xttsft.voice import synth

    console = Console()
    device = _device(args.device)
    console.print(f"building the full-size XTTS-v2 architecture (random weights) on {device} ...")
    t0 = time.perf_counter()
    model = full_size_xtts(device)
    build_s = time.perf_counter() - t0
    model.gpt.max_gen_mel_tokens = tokens
    settings = SynthSettings(max_audio_tokens=tokens, language="en", seed=0)
    tmp = Path(tempfile.mkdtemp(prefix="xttsft-bench-"))
    ref = args.reference or make_reference(tmp / "ref.wav")
    voice = synth.Voice(
        model=model,
        source=synth.ModelSource("base", "random", None),
        description="random full-size",
        language="en",
        base_dir=None,
        dataset_dir=None,
        tiny=False,
        identity="bench",
        device=device,
    )
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rows, notes, ratios = _measure(model, voice, ref, tmp, settings, tokens, repeats, args, sync)
    notes[:0] = [
        f"cap of {tokens} audio tokens per sentence; best of {repeats}; model build {build_s:.1f} s; "
        f"warm-up {'on' if args.warmup else 'off'}"
    ]
    _print(console, rows, ratios, notes, device)
    result = {
        "name": "synth" + ("_cuda" if device == "cuda" else ""),
        "date": date.today().isoformat(),
        "machine": machine(),
        "device": device,
        "rows": rows,
        "ratios": ratios,
        "notes": notes,
    }
    out = args.out or HERE / "results" / ("synth_cuda.json" if device == "cuda" else "synth.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {out}")
    shutil.rmtree(tmp, ignore_errors=True)


def _lora_rows(model, speak, repeats: int, row) -> str:
    """LoRA (r=8, small random B so it changes the output) unmerged, then merged into the GPT."""
    import torch

    from xttsft import model as xm
    from xttsft.settings import TrainSettings

    lora_cfg = xm.attach_lora(model.gpt, TrainSettings())
    with torch.no_grad():
        for name, p in model.gpt.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    lora_params = sum(p.numel() for n_, p in model.gpt.named_parameters() if "lora_" in n_)
    model.eval()
    secs, n = timed(speak, repeats)
    row("LoRA unmerged (PEFT layers)", secs, n, lora_params=lora_params)
    xm.merge_lora(model.gpt)
    secs, n = timed(speak, repeats)
    row("LoRA merged (export / load_finetuned)", secs, n)
    return f"LoRA r={lora_cfg.r}: {lora_params / 1e6:.2f} M"


def _measure(model, voice, ref: Path, tmp: Path, settings, tokens: int, repeats: int, args, sync):
    """Every row in one process, same text, seed and token cap: (rows, notes, ratios)."""
    from xttsft.voice import synth

    sr = voice.sample_rate
    rows: list[dict] = []

    def row(name: str, secs: float, samples: int, **extra) -> None:
        audio = samples / sr
        rows.append(
            {
                "method": name,
                "seconds": round(secs, 3),
                "audio_s": round(audio, 3),
                "rtf": round(secs / audio, 3) if audio else None,
                **extra,
            }
        )

    cond = synth.conditioning(voice, [ref], cache_dir=tmp / "cache")
    if args.warmup:  # CUDA's start-up (kernels, allocator, cuBLAS) is paid here, not by the first timed row
        synth.speak(voice, cond, TEXT, "en", settings, seed=0)
        sync()
    # 1. stock coqui call (latents every call) vs xttsft (latents cached once)
    _stock_row(model, ref, synth.sampling(voice, settings), repeats, row)  # the values speak uses
    t0 = time.perf_counter()
    cond = synth.conditioning(voice, [ref], cache_dir=tmp / "fresh")
    first_cond = time.perf_counter() - t0
    t0 = time.perf_counter()
    synth.conditioning(voice, [ref], cache_dir=tmp / "fresh")
    cached_cond = time.perf_counter() - t0
    secs, n = timed(lambda: synth.speak(voice, cond, TEXT, "en", settings, seed=0)[0], repeats)
    row(
        "xttsft speak (cached latents)",
        secs,
        n,
        latents_first_s=round(first_cond, 3),
        latents_cached_s=round(cached_cond, 4),
    )

    # 2. LoRA unmerged vs merged
    lora_note = _lora_rows(model, lambda: synth.speak(voice, cond, TEXT, "en", settings, seed=0)[0], repeats, row)
    params = sum(p.numel() for p in model.parameters())
    notes = [
        f"{params / 1e6:.1f} M parameters ({lora_note})",
        f"latents: {first_cond:.2f} s computed, {cached_cond * 1000:.1f} ms from the cache",
        f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count() or 0} CPUs",
    ]
    by = {r["method"].split(" (")[0]: r for r in rows}
    stock, cached = by["stock Xtts.synthesize"], by["xttsft speak"]
    ratios = {
        "stock_over_cached_latents": round(stock["seconds"] / cached["seconds"], 3) if "error" not in stock else None,
        "unmerged_over_merged": round(by["LoRA unmerged"]["seconds"] / by["LoRA merged"]["seconds"], 3),
    }
    # 3. streaming: time to the first chunk of stream_chunk_size tokens vs the whole audio
    if tokens > args.stream_chunk:
        first, samples = _first_chunk(model, cond, args.stream_chunk, repeats, sync)
        rows.append(
            {
                "method": f"inference_stream first chunk ({args.stream_chunk} of {tokens} tokens)",
                "seconds": round(first, 3),
                "audio_s": round(samples / sr, 3),
                "rtf": None,
            }
        )
        ratios["whole_over_first_chunk"] = round(by["LoRA merged"]["seconds"] / first, 3)
    else:
        notes.append(
            f"streaming first chunk skipped: {tokens} tokens do not exceed stream_chunk_size "
            f"{args.stream_chunk}, so the first chunk would be the whole utterance"
        )
    return rows, notes, ratios


def _print(console, rows: list[dict], ratios: dict, notes: list[str], device: str) -> None:
    from rich.table import Table

    table = Table(title=f"synthesis, full-size XTTS-v2 architecture (random weights) on {device}")
    for col in ("method", "seconds", "audio s", "RTF"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in rows:
        secs = "-" if r["seconds"] != r["seconds"] else f"{r['seconds']:.2f}"  # NaN: the row failed
        table.add_row(
            r["method"] + (f" [{r['error']}]" if r.get("error") else ""),
            secs,
            "-" if not r["audio_s"] else f"{r['audio_s']:.2f}",
            "-" if r["rtf"] is None else f"{r['rtf']:.2f}",
        )
    console.print(table)
    for k, v in ratios.items():
        console.print(f"ratio {k}: [bold]{'-' if v is None else f'{v:.2f}x'}[/]")
    for note in notes:
        console.print(f"note: {note}")


if __name__ == "__main__":
    sys.exit(main())
