"""Our training epoch against coqui's recipe, side by side, on the full-size XTTS-v2 architecture.

Both systems get the same model files (a full-size XTTS-v2 with random weights, built here: no
download), the same LJSpeech dataset (espeak-ng clips of 3 to 15 s, a realistic length mix),
batch 2, fp32, and the same number of CPU threads (coqui's Trainer would set one thread by
itself; here both get ``--threads``):

* **coqui**: ``GPTTrainer`` configured as ``recipes/ljspeech/xtts_v2/train_gpt_xtts.py`` does it
  (AdamW betas 0.9/0.96 with decay on weights only, masking conditioning, its ``XTTSDataset``
  and DataLoader), stepped the way coqui's ``Trainer`` steps it: ``format_batch_on_device``,
  ``train_step``, backward, ``optimizer.step``;
* **xttsft full** and **xttsft LoRA**: the parts ``xttsft train`` runs (``build_model``,
  ``build_optimization``, ``ClipDataset`` + length-bucketed ``epoch_batches`` + DataLoader,
  ``Trainer.train_epoch``).

Each (system, round) runs in its own process (peak RSS is per process), in alternating order.
Reported: wall time of one epoch (data loading included, validation excluded), median s/step,
peak RSS, and the ratios. Then, for xttsft full: the same epoch with a second busy process on
the machine, with 1 and with all threads, and with 2 DataLoader workers.

    python benchmarks/train_vs_coqui.py              # 12 clips, 2 rounds
    python benchmarks/train_vs_coqui.py --quick      # 6 clips, 1 round, no extra rows
    python benchmarks/train_vs_coqui.py --extras     # only the extra rows, 6 clips (about 15 min)
    python benchmarks/train_vs_coqui.py --no-extras --ablations
        # the three systems, and xttsft with one choice undone each (gelu_new, eager attention,
        # no length buckets; lora_dropout 0.05)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from _common import machine

HERE = Path(__file__).resolve().parent
CACHE = Path(tempfile.gettempdir()) / "xttsft-bench-train-vs-coqui"
SENTENCES = [
    "The morning train was late again.",
    "A fisherman waved at me from a small green boat, and the water was calm.",
    "My grandmother kept a garden behind her house for fifty years, and she grew tomatoes, beans and tall "
    "yellow sunflowers every single summer.",
    "Learning a new language takes time and a little courage.",
    "The library on the corner opens at nine in the morning, it has a quiet room with large windows and "
    "wooden tables, and students come to read, to write, and sometimes to sleep in the afternoon sun.",
    "Bakers opened their shops and the streets filled with people, carts and bicycles.",
]


# ------------------------------------------------------------------ the shared inputs
def make_dataset(root: Path, n: int) -> Path:
    """An LJSpeech folder of ``n`` espeak-ng clips between about 3 and 15 s."""
    import soundfile as sf

    from xttsft.audio import read_mono

    ds = root / f"dataset-{n}-v3"
    if (ds / "stats.json").is_file():
        return ds
    (ds / "wavs").mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(n + 2):
        text = SENTENCES[k % len(SENTENCES)]
        raw = ds / f"raw{k}.wav"
        rate = 130 + 15 * (k % 4) + (7 if k >= n else 0)  # val clips: other audio than their train twins
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", str(rate), "-w", str(raw), text], check=True)
        x = read_mono(raw, 22050)
        raw.unlink()
        sf.write(str(ds / "wavs" / f"c{k:03d}.wav"), x[: 15 * 22050], 22050, subtype="PCM_16")
        rows.append(f"c{k:03d}|{text}|{text}\n")
    (ds / "metadata_train.csv").write_text("".join(rows[:-2]))
    (ds / "metadata_val.csv").write_text("".join(rows[-2:]))  # train never sees them (an id in both is refused)
    (ds / "stats.json").write_text(json.dumps({"language": "en", "max_audio_seconds": 15.0}))
    return ds


def make_base(root: Path) -> Path:
    """A full-size XTTS-v2 model folder with random weights (the six files of the real one)."""
    import torch
    from TTS.tts.configs.xtts_config import XttsAudioConfig, XttsConfig
    from TTS.tts.models.xtts import Xtts

    from xttsft.model import _build_tiny_vocab, _new_dvae, xtts_v2_args

    base = root / "xtts-v2-random"
    if (base / "speakers_xtts.pth").is_file():
        return base
    base.mkdir(parents=True, exist_ok=True)
    _build_tiny_vocab(base / "vocab.json")
    config = XttsConfig(
        model_args=xtts_v2_args(),
        audio=XttsAudioConfig(sample_rate=22050, output_sample_rate=24000, dvae_sample_rate=22050),
    )
    config.model_args.tokenizer_file = ""
    torch.manual_seed(0)
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer

    model = Xtts(config)
    model.tokenizer = VoiceBpeTokenizer(vocab_file=str(base / "vocab.json"))
    model.init_models()  # text token counts from the vocabulary, as the real XTTS-v2 loads
    torch.save({"model": model.state_dict()}, base / "model.pth")
    config.save_json(str(base / "config.json"))
    torch.save(_new_dvae().state_dict(), base / "dvae.pth")
    torch.save(torch.ones(80), base / "mel_stats.pth")
    torch.save(
        {"Random": {"gpt_cond_latent": torch.randn(1, 32, 1024), "speaker_embedding": torch.randn(1, 512, 1)}},
        base / "speakers_xtts.pth",
    )
    return base


# ------------------------------------------------------------------ the workers
def _timed_batches() -> tuple[list[float], callable]:
    marks: list[float] = []
    return marks, lambda *a: marks.append(time.perf_counter())


#: Our system with one of its choices undone, to show what that choice is worth (``--ablations``):
#: worker name -> (mode, what is undone, TrainSettings overrides).
ABLATIONS = {
    "full-gelu_new": ("full", "transformers' gelu_new, not the fused GELU", {}),
    "full-eager": ("full", "transformers' eager attention, not SDPA", {}),
    "full-unbucketed": ("full", "shuffled batches, not length-bucketed", {}),
    "lora-dropout0.05": ("lora", "lora_dropout 0.05, not 0", {"lora_dropout": 0.05}),
}


def undo(ablation: str, gpt) -> None:
    """Put back in ``gpt`` (coqui's XTTS GPT, as build_model returns it) what the ablation undoes."""
    if ablation == "full-gelu_new":
        from transformers.activations import NewGELUActivation

        for block in gpt.gpt.h:
            block.mlp.act = NewGELUActivation()
    elif ablation == "full-eager":
        gpt.gpt.config._attn_implementation = "eager"


def system_name(worker: str) -> str:
    """The row name of a worker: ``xttsft lora`` or ``xttsft lora (lora_dropout 0.05, not 0)``."""
    if worker in ABLATIONS:
        mode, what, _ = ABLATIONS[worker]
        return f"xttsft {mode} ({what})"
    return f"xttsft {worker}"


def ours(base: Path, ds: Path, mode: str, threads: int, workers: int) -> dict:
    import torch

    from xttsft.data.datasets import read_dataset
    from xttsft.settings import TrainSettings
    from xttsft.training.train import build_model, build_optimization, gpt_loss, resolve_train_settings, set_threads
    from xttsft.training.train_data import ClipDataset, Featurizer, epoch_batches, make_loader, prepare_data
    from xttsft.training.trainer import Trainer, TrainHooks, TrainState

    system, ablation = system_name(mode), mode
    mode, _, extra = ABLATIONS.get(mode, (mode, "", {}))
    ts = TrainSettings(
        base_model=str(base),
        dataset_dir=ds,
        use_lora=mode == "lora",
        batch_size=2,
        grad_accum_steps=1,
        device="cpu",
        use_amp=False,
        gradient_checkpointing=False,
        num_workers=workers,
        num_threads=threads,
        learning_rate=1e-5,
        use_tensorboard=False,
        **extra,
    )
    res = resolve_train_settings(ts)
    set_threads(ts)
    torch.manual_seed(0)
    model = build_model(base, ts, res)
    undo(ablation, model.gpt)
    feats = Featurizer.from_base(base, "cpu")
    data = prepare_data(
        read_dataset(ds),
        model.xtts.tokenizer,
        model.xtts.args.gpt_max_audio_tokens,
        model.xtts.args.gpt_max_text_tokens,
    )
    train_ds = ClipDataset(data.train, ts.seed, is_eval=False)
    lengths = [s.n_samples for s in data.train]
    optim = build_optimization(model.gpt, ts, res, total_steps=100)
    bucket = ablation != "full-unbucketed"
    marks, after = _timed_batches()
    trainer = Trainer(
        gpt=model.gpt,
        model=model.gpt,
        featurize=feats,
        loss_fn=gpt_loss,
        optimizer=optim.optimizer,
        scheduler=optim.scheduler,
        scaler=optim.scaler,
        batches_of=lambda e: epoch_batches(lengths, 2, ts.seed, e, bucket=bucket),
        loader_of=lambda e, b: make_loader(train_ds, b, workers),
        validate=lambda: float("nan"),
        save_checkpoint=lambda *a: Path(),
        save_best=lambda *a: None,
        num_epochs=1,
        grad_accum_steps=1,
        max_grad_norm=0.0,
        max_nan_steps=10**6,
        save_every_n_epochs=1,
        amp_dtype=None,
        device_type="cpu",
        hooks=TrainHooks(after_batch=after),
    )
    trainer.state = TrainState()
    t0 = time.perf_counter()
    trainer.train_epoch(0)
    epoch = time.perf_counter() - t0
    return _row(system, epoch, [t0, *marks], trainer.step_losses, len(data.train), threads, workers)


def coqui(base: Path, ds: Path, threads: int, workers: int) -> dict:
    import torch
    from TTS.tts.configs.xtts_config import XttsAudioConfig
    from TTS.tts.layers.xtts.trainer.gpt_trainer import GPTArgs, GPTTrainer, GPTTrainerConfig

    from xttsft.model import xtts_v2_args

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    v2 = xtts_v2_args()
    args = GPTArgs(
        max_conditioning_length=132300,
        min_conditioning_length=66150,
        debug_loading_failures=False,
        max_wav_length=15 * 22050 + 10,
        max_text_length=200,
        mel_norm_file=str(base / "mel_stats.pth"),
        dvae_checkpoint=str(base / "dvae.pth"),
        xtts_checkpoint="",
        tokenizer_file=str(base / "vocab.json"),
        **{
            k: getattr(v2, k)
            for k in (
                "gpt_layers",
                "gpt_n_model_channels",
                "gpt_n_heads",
                "gpt_max_audio_tokens",
                "gpt_max_text_tokens",
                "gpt_max_prompt_tokens",
                "gpt_number_text_tokens",
                "gpt_start_text_token",
                "gpt_stop_text_token",
                "gpt_num_audio_tokens",
                "gpt_start_audio_token",
                "gpt_stop_audio_token",
                "gpt_code_stride_len",
                "gpt_use_masking_gt_prompt_approach",
                "gpt_use_perceiver_resampler",
            )
        },
    )
    config = GPTTrainerConfig(
        model_args=args,
        audio=XttsAudioConfig(sample_rate=22050, dvae_sample_rate=22050, output_sample_rate=24000),
        batch_size=2,
        eval_batch_size=2,
        num_loader_workers=workers,
        num_eval_loader_workers=0,
        optimizer="AdamW",
        optimizer_wd_only_on_weights=True,
        optimizer_params={"betas": [0.9, 0.96], "eps": 1e-8, "weight_decay": 1e-2},
        lr=5e-06,
        lr_scheduler="MultiStepLR",
        lr_scheduler_params={"milestones": [50000], "gamma": 0.5, "last_epoch": -1},
    )
    model = GPTTrainer.init_from_config(config)
    rows = [ln.split("|") for ln in (ds / "metadata_train.csv").read_text().splitlines()]
    samples = [
        {
            "text": r[1],
            "audio_file": str(ds / "wavs" / f"{r[0]}.wav"),
            "speaker_name": "s",
            "language": "en",
            "root_path": str(ds),
            "audio_unique_name": r[0],
        }
        for r in rows
    ]
    loader = model.get_data_loader(config, is_eval=False, samples=samples, verbose=False)
    opt = model.get_optimizer()
    model.eval()
    model.xtts.gpt.train()  # GPTTrainer.on_train_epoch_start
    marks, losses = [], []
    t0 = time.perf_counter()
    for batch in loader:
        batch = model.format_batch_on_device(model.format_batch(batch))
        _, loss_dict = model.train_step(batch, None)
        loss_dict["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss_dict["loss"]))
        marks.append(time.perf_counter())
    epoch = time.perf_counter() - t0
    return _row("coqui full (GPTTrainer)", epoch, [t0, *marks], losses, len(samples), threads, workers)


def _row(
    system: str, epoch: float, marks: list[float], losses: list[float], clips: int, threads: int, workers: int
) -> dict:
    steps = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    return {
        "system": system,
        "clips": clips,
        "threads": threads,
        "workers": workers,
        "steps": len(steps),
        "epoch_s": round(epoch, 1),
        "s_per_step": round(statistics.median(steps), 2) if steps else None,
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2),
        "finite_losses": sum(1 for v in losses if v == v and abs(v) != float("inf")),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),  # as the worker ran (tune_process sets it)
    }


# ------------------------------------------------------------------ the driver
def main_ratios(rows: list[dict]) -> dict:
    """Our full and LoRA epochs and peak RSS against coqui's, and each ablation's cost: our epoch / its epoch."""
    by = {r["system"]: r for r in rows}
    c, f, lo = by["coqui full (GPTTrainer)"], by["xttsft full"], by["xttsft lora"]
    ratios = {
        "ours_full_epoch_vs_coqui_full": round(f["epoch_s"] / c["epoch_s"], 2),
        "ours_lora_epoch_vs_coqui_full": round(lo["epoch_s"] / c["epoch_s"], 2),
        "ours_full_peak_rss_vs_coqui": round(f["peak_rss_gb"] / c["peak_rss_gb"], 2),
        "ours_lora_peak_rss_vs_coqui": round(lo["peak_rss_gb"] / c["peak_rss_gb"], 2),
    }
    for worker, (mode, _, _) in ABLATIONS.items():
        row = by.get(system_name(worker))
        if row is not None:
            ours_row = by[f"xttsft {mode}"]
            key = worker.replace("-", "_").replace(".", "")
            ratios[f"ours_{mode}_vs_{key}_epoch"] = round(ours_row["epoch_s"] / row["epoch_s"], 2)
            ratios[f"ours_{mode}_vs_{key}_peak_rss"] = round(ours_row["peak_rss_gb"] / row["peak_rss_gb"], 2)
    return ratios


def _spawn(args: list[str], busy: bool = False, env: dict[str, str] | None = None) -> dict:
    burner = None
    if busy:  # another job on the machine: one spinning process per core, in a group of their own
        burner = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import multiprocessing as m\n"
                "def f(_):\n    while True: pass\n"
                "m.Pool(os_n:=__import__('os').cpu_count()).map(f, range(os_n))",
            ],
            start_new_session=True,
        )
        time.sleep(1.0)
    try:
        p = subprocess.run(
            [sys.executable, __file__, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}
        )
    finally:
        if burner is not None:  # the pool's workers too: killing the parent alone left them spinning
            os.killpg(burner.pid, signal.SIGKILL)
            burner.wait()
    if p.returncode != 0:
        raise SystemExit(f"worker {args} failed:\n{p.stderr[-3000:]}")
    row = json.loads(p.stdout.strip().splitlines()[-1])
    row["busy_machine"] = busy
    row.setdefault("omp_wait_policy", "default")
    return row


def _extras(n: int, threads: int, idle: dict) -> tuple[list[dict], dict]:
    """xttsft full on a busy machine, with 1 thread, with OMP_WAIT_POLICY=PASSIVE and with 2 workers."""
    # --untuned: OpenMP's default (spinning) wait policy and glibc's default heap, as before tune_process
    common = ["--worker", "full", "--clips", str(n), "--untuned"]
    passive = {"OMP_WAIT_POLICY": "PASSIVE"}
    plan = [
        ([*common, "--threads", str(threads)], True, None),
        ([*common, "--threads", "1"], False, None),
        ([*common, "--threads", "1"], True, None),
        ([*common, "--threads", str(threads)], False, passive),
        ([*common, "--threads", str(threads)], True, passive),
        ([*common, "--threads", str(threads), "--workers", "2"], False, None),
    ]
    extra = []
    for args, busy, env in plan:
        extra.append(_spawn(args, busy=busy, env=env))
        print(f"extra: {extra[-1]}", file=sys.stderr, flush=True)
    for e in extra:
        e["system"] += f" ({e['threads']} thread{'s' if e['threads'] > 1 else ''}, {e['workers']} workers"
        e["system"] += ", OMP_WAIT_POLICY=PASSIVE" if e["omp_wait_policy"] == "PASSIVE" else ""
        e["system"] += ", busy machine)" if e["busy_machine"] else ")"
    ratios = {
        "busy_vs_idle_step_all_threads": round(extra[0]["s_per_step"] / idle["s_per_step"], 2),
        "busy_vs_idle_step_1_thread": round(extra[2]["s_per_step"] / extra[1]["s_per_step"], 2),
        "passive_vs_default_step_idle": round(extra[3]["s_per_step"] / idle["s_per_step"], 2),
        "busy_vs_idle_step_all_threads_passive": round(extra[4]["s_per_step"] / extra[3]["s_per_step"], 2),
        "workers2_vs_workers0_epoch": round(extra[5]["epoch_s"] / idle["epoch_s"], 2),
    }
    return extra, ratios


def extras_only(n: int, threads: int) -> int:
    """Only the extra rows, against an idle xttsft full epoch of the same clips, merged into the results file."""
    make_base(CACHE)
    make_dataset(CACHE, n)
    idle = _spawn(["--worker", "full", "--clips", str(n), "--threads", str(threads), "--untuned"])
    print(f"idle: {idle}", file=sys.stderr, flush=True)
    extra, ratios = _extras(n, threads, idle)
    idle["system"] += f" ({threads} threads, 0 workers, idle: the reference for these rows)"
    path = HERE / "results" / "train_vs_coqui.json"
    out = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"name": "train_vs_coqui"}
    out["extras"] = {
        "date": date.today().isoformat(),
        "machine": machine(),
        "notes": f"xttsft full, {n} clips, one epoch each in its own process; busy = a second process spinning "
        "on every core",
        "rows": [idle, *extra],
        "ratios": ratios,
    }
    path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    for row in [idle, *extra]:
        print(row)
    print(json.dumps(ratios, indent=2))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--untuned", action="store_true", help=argparse.SUPPRESS)  # without hardware.tune_process
    ap.add_argument("--clips", type=int, default=None)
    ap.add_argument("--no-extras", action="store_true", help="the three systems only, without the extra rows")
    ap.add_argument(
        "--ablations",
        action="store_true",
        help="also xttsft with one choice undone each: " + "; ".join(d for _, d, _ in ABLATIONS.values()),
    )
    ap.add_argument(
        "--extras",
        action="store_true",
        help="only the busy-machine, thread, OMP_WAIT_POLICY and worker rows (6 clips unless --clips)",
    )
    args = ap.parse_args()
    n = args.clips or (6 if args.quick or args.extras else 12)
    CACHE.mkdir(parents=True, exist_ok=True)
    if args.extras and not args.worker:
        return extras_only(n, args.threads)
    if args.worker:
        if args.worker != "coqui" and not args.untuned:  # xttsft's process settings, as its CLI sets them
            from xttsft.hardware import tune_process

            tune_process()
        base, ds = make_base(CACHE), make_dataset(CACHE, n)
        if args.worker == "coqui":
            row = coqui(base, ds, args.threads, args.workers)
        else:
            row = ours(base, ds, args.worker, args.threads, args.workers)
        print(json.dumps(row))
        return 0
    make_base(CACHE)
    make_dataset(CACHE, n)
    rounds = args.rounds or (1 if args.quick else 2)
    common = ["--clips", str(n), "--threads", str(args.threads)]
    systems = ["coqui", "full", "lora", *(ABLATIONS if args.ablations else [])]
    runs: dict[str, list[dict]] = {s: [] for s in systems}
    for r in range(rounds):
        for s in systems if r % 2 == 0 else systems[::-1]:
            runs[s].append(_spawn(["--worker", s, *common]))
            print(f"round {r + 1}: {runs[s][-1]}", file=sys.stderr, flush=True)
    rows = [
        min(rs, key=lambda x: x["epoch_s"]) | {"rounds": len(rs), "epoch_s_each": [x["epoch_s"] for x in rs]}
        for rs in runs.values()
    ]
    ratios = main_ratios(rows)
    measure_extras = not args.quick and not args.no_extras
    if measure_extras:
        f = next(r for r in rows if r["system"] == "xttsft full")
        extra, more = _extras(n, args.threads, f)
        rows += extra
        ratios |= more
    for row in rows:
        print(row)
    print(json.dumps(ratios, indent=2))
    out = {
        "name": "train_vs_coqui",
        "date": date.today().isoformat(),
        "machine": machine(),
        "notes": (
            f"full-size XTTS-v2 (random weights), {n} espeak-ng clips of 3-15 s, batch 2, fp32, "
            f"{args.threads} threads for both; one epoch, validation excluded; best of {rounds} alternating "
            "rounds, each in its own process. coqui: GPTTrainer as its recipe configures it."
        ),
        "rows": rows,
        "ratios": ratios,
    }
    path = HERE / "results" / "train_vs_coqui.json"
    if path.exists():  # the history, and the --extras rows when this run did not measure them again
        kept = json.loads(path.read_text(encoding="utf-8"))
        out |= {k: kept[k] for k in ("previous", *(() if measure_extras else ("extras",))) if k in kept}
    path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
