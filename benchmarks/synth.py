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
* on a GPU only: first-chunk latency of ``Xtts.inference_stream`` vs the time
  to the whole audio with ``inference`` (skipped with a note on CPU).

RTF = synthesis seconds / audio seconds (lower is faster).

    python benchmarks/synth.py            # 24 audio tokens (~1.1 s of audio), best of 2
    python benchmarks/synth.py --quick    # 12 tokens, 1 repeat

On a shared CPU the load average is recorded with the figures: compare ratios, not seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from _common import machine

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


def make_reference(out: Path) -> Path:
    raw = out.with_suffix(".espeak.wav")
    subprocess.run(["espeak-ng", "-s", "140", "-w", str(raw),
                    "This reference clip gives the model a voice to copy, about six seconds of speech."], check=True)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(raw), "-ac", "1", "-ar", "22050",
                    str(out)], check=True)
    raw.unlink()
    return out


def timed(fn, repeats: int) -> tuple[float, int]:
    """(best seconds of ``repeats`` calls, audio samples of the last call)."""
    best, n = float("inf"), 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        wav = fn()
        best = min(best, time.perf_counter() - t0)
        n = len(wav)
    return best, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="12 audio tokens, 1 repeat")
    parser.add_argument("--tokens", type=int, default=None, help="audio tokens per synthesis (default 24, quick 12)")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    tokens = args.tokens or (12 if args.quick else 24)
    repeats = args.repeats or (1 if args.quick else 2)

    import numpy as np
    import torch
    from rich.console import Console
    from rich.table import Table

    from xttsft import model as xm
    from xttsft import synth
    from xttsft.settings import SynthSettings, TrainSettings

    console = Console()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    console.print(f"building the full-size XTTS-v2 architecture (random weights) on {device} ...")
    t0 = time.perf_counter()
    model = full_size_xtts(device)
    build_s = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    gpt_params = sum(p.numel() for p in model.gpt.parameters())
    model.gpt.max_gen_mel_tokens = tokens
    settings = SynthSettings(max_audio_tokens=tokens, language="en", seed=0)
    tmp = Path(tempfile.mkdtemp(prefix="xttsft-bench-"))
    ref = make_reference(tmp / "ref.wav")
    voice = synth.Voice(model=model, source=synth.ModelSource("base", "random", None), description="random full-size",
                        language="en", base_dir=None, dataset_dir=None, tiny=False, identity="bench", device=device)
    sr = voice.sample_rate
    rows: list[dict] = []

    def row(name: str, secs: float, samples: int, **extra) -> None:
        audio = samples / sr
        rows.append({"method": name, "seconds": round(secs, 3), "audio_s": round(audio, 3),
                     "rtf": round(secs / audio, 3) if audio else None, **extra})

    # 1. stock coqui call (latents every call) vs xttsft (latents cached once)
    def stock():
        torch.manual_seed(0)
        return model.synthesize(TEXT, speaker_wav=str(ref), language="en", temperature=settings.temperature,
                                top_p=settings.top_p, top_k=settings.top_k,
                                repetition_penalty=settings.repetition_penalty)["wav"]

    secs, n = timed(stock, repeats)
    row("stock Xtts.synthesize (latents per call)", secs, n)
    t0 = time.perf_counter()
    cond = synth.conditioning(voice, [ref], cache_dir=tmp / "cache")
    first_cond = time.perf_counter() - t0
    t0 = time.perf_counter()
    synth.conditioning(voice, [ref], cache_dir=tmp / "cache")
    cached_cond = time.perf_counter() - t0
    secs, n = timed(lambda: synth.speak(voice, cond, TEXT, "en", settings, seed=0)[0], repeats)
    row("xttsft speak (cached latents)", secs, n, latents_first_s=round(first_cond, 3),
        latents_cached_s=round(cached_cond, 4))

    # 2. LoRA unmerged vs merged
    lora_cfg = xm.attach_lora(model.gpt, TrainSettings())
    with torch.no_grad():
        for name, p in model.gpt.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    lora_params = sum(p.numel() for n_, p in model.gpt.named_parameters() if "lora_" in n_)
    model.eval()
    secs, n = timed(lambda: synth.speak(voice, cond, TEXT, "en", settings, seed=0)[0], repeats)
    row("LoRA unmerged (PEFT layers)", secs, n, lora_params=lora_params)
    xm.merge_lora(model.gpt)
    secs, n = timed(lambda: synth.speak(voice, cond, TEXT, "en", settings, seed=0)[0], repeats)
    row("LoRA merged (export / load_finetuned)", secs, n)

    # 3. GPU: streaming first chunk vs whole audio
    notes = [f"cap of {tokens} audio tokens per sentence; best of {repeats}; model build {build_s:.1f} s",
             f"{params / 1e6:.1f} M parameters ({gpt_params / 1e6:.1f} M GPT before LoRA, "
             f"LoRA r={lora_cfg.r}: {lora_params / 1e6:.2f} M)",
             "load average (1 min) at the end: %.1f on %d CPUs" % (os.getloadavg()[0], os.cpu_count() or 0)]
    ratios = {
        "stock_over_cached_latents": round(rows[0]["seconds"] / rows[1]["seconds"], 3),
        "unmerged_over_merged": round(rows[2]["seconds"] / rows[3]["seconds"], 3),
    }
    if device == "cuda":
        text_tokens = TEXT.lower()

        def first_chunk() -> float:
            torch.manual_seed(0)
            t0 = time.perf_counter()
            for _chunk in model.inference_stream(text_tokens, "en", cond.gpt_cond_latent, cond.speaker_embedding,
                                                 stream_chunk_size=20):
                torch.cuda.synchronize()
                return time.perf_counter() - t0
            return float("nan")

        first = min(first_chunk() for _ in range(repeats))
        whole = next(r for r in rows if r["method"].startswith("LoRA merged"))["seconds"]
        rows.append({"method": "inference_stream first chunk (20 tokens)", "seconds": round(first, 3),
                     "audio_s": None, "rtf": None})
        ratios["whole_over_first_chunk"] = round(whole / first, 3)
    else:
        notes.append("no GPU: streaming first-chunk latency (inference_stream) skipped")

    table = Table(title=f"synthesis, full-size XTTS-v2 architecture (random weights) on {device}")
    for col in ("method", "seconds", "audio s", "RTF"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in rows:
        table.add_row(r["method"], f"{r['seconds']:.2f}", "-" if r["audio_s"] is None else f"{r['audio_s']:.2f}",
                      "-" if r["rtf"] is None else f"{r['rtf']:.2f}")
    console.print(table)
    console.print(f"latents: {first_cond:.2f} s computed, {cached_cond * 1000:.1f} ms from the cache")
    for k, v in ratios.items():
        console.print(f"ratio {k}: [bold]{v:.2f}x[/]")
    for note in notes:
        console.print(f"note: {note}")

    result = {"name": "synth", "date": date.today().isoformat(), "machine": machine(), "device": device,
              "rows": rows, "ratios": ratios, "notes": notes}
    out = HERE / "results" / "synth.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {out}")
    shutil.rmtree(tmp, ignore_errors=True)
    _ = np  # numpy is imported for torch interop only


if __name__ == "__main__":
    sys.exit(main())
