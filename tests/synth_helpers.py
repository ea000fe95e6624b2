"""Shared set-up of the synth, export and eval tests: a workspace with a tiny
LoRA run (real model.py code: attach_lora + write_checkpoint) and a small
espeak-ng dataset (samples.jsonl with a train and a val split)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from xttsft.paths import Workspace

TEXTS = [
    "The weather is nice today and we will walk to the park near the river.",
    "Please bring your notebook to the meeting tomorrow morning at nine.",
    "A quick brown fox jumps over the lazy dog while the cat sleeps.",
    "Reading books in the evening helps me relax after a long day at work.",
]


def make_dataset(ws: Workspace, voice: str = "en-us") -> Path:
    """Four espeak-ng clips (about 5-6 s): two train, two val."""
    import soundfile as sf

    ds = ws.dataset_dir
    (ds / "wavs").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, text in enumerate(TEXTS):
        out = ds / "wavs" / f"clip_{i:04d}.wav"
        raw = out.with_suffix(".espeak.wav")
        subprocess.run(["espeak-ng", "-v", voice, "-s", "120", "-w", str(raw), text], check=True)
        subprocess.run(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(raw), "-ac", "1", "-ar", "22050", str(out)],
            check=True,
        )
        raw.unlink()
        rows.append(
            {
                "id": out.stem,
                "wav": f"wavs/{out.name}",
                "text": text,
                "duration": sf.info(str(out)).duration,
                "split": "train" if i < 2 else "val",
                "language": "en",
                "avg_logprob": -0.1 * (i + 1),
                "source": "x.wav",
            }
        )
    (ds / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return ds


def make_run(ws: Workspace, name: str = "run1", mode: str = "lora", language: str = "en") -> Path:
    """A run folder in the contract layout, trained for zero steps but with
    non-zero LoRA B matrices (fresh LoRA is a no-op), or a perturbed full GPT."""
    import torch

    from xttsft import model as xm
    from xttsft.settings import TrainSettings

    base = xm.resolve_base_model("tiny")
    xtts = xm.load_xtts(base, for_training=True)
    cfg = xm.attach_lora(xtts.gpt, TrainSettings()) if mode == "lora" else None
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in xtts.gpt.named_parameters():
            if (mode == "lora" and "lora_B" in n) or (mode == "full" and n.endswith("mlp.c_fc.weight")):
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    run_dir = ws.run_dir(name)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.json").write_text(
        json.dumps(
            {
                "base_model": "tiny",
                "base_dir": str(base),
                "language": language,
                "mode": mode,
                "dataset_dir": str(ws.dataset_dir),
                "created": "2026-01-01T00:00:00+00:00",
            }
        )
    )
    xm.write_checkpoint(run_dir / "best_model", xtts.gpt, mode, {"epoch": 1, "step": 1}, lora_config=cfg)
    return run_dir
