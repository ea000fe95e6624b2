"""Transcription: our batched, packed way vs one faster-whisper call per clip.

Same clips (espeak-ng sentences, 5-12 s each, known text), same model (English: the bundled
tiny.en; ``--language pt``: Brazilian Portuguese sentences, espeak-ng pt-br, and the bundled
multilingual Whisper base), int8, 2 CPU threads, same beam size (5; greedy too in the full run),
word timestamps on:

* **one call per clip** - ``WhisperModel.transcribe(clip)`` for every clip, what
  the guide's script (and most tools) do: Whisper pads each clip to 30 s;
* **batched, one clip per window** - ``BatchedInferencePipeline`` with one clip
  per window (``--window-seconds 0``): batching alone, still 30 s of encoder work
  per clip;
* **ours** - ``xttsft.data.transcribe.transcribe_clips``: clips packed into 30 s windows
  (1 s of silence between them), windows decoded in batches of 8.

Reports x-realtime and word error rate against the spoken text for each, and
the speed ratio of ours over one call per clip (target >= 3x on a 2-core CPU).

With a multilingual model (``--language pt``, or ``--model bundled-base``) three more rows time the
per-clip language check, as an added share of the packed transcription without it, in the same
alternating rounds:

* **new** - each clip's language from its own frames of the encoder pass the packed decoding made
  (``transcribe_clips(..., languages=True)``, one decoder step per clip), and a ``detect_language``
  pass of its own only for a clip that fails there (``clip_language_probabilities``), what
  ``transcribe`` runs since issue 22;
* **old** - one ``detect_language`` call per clip (a 30 s encoder pass each) before the decoding,
  what ``transcribe`` ran before.

``--auto`` judges the clips as ``--language auto`` does (the file's language being ``--language``);
``--language-check-only`` runs just those rows.

    python benchmarks/transcribe.py                 # 24 clips, 3 interleaved rounds (median)
    python benchmarks/transcribe.py --quick         # 10 clips, 1 round, beam 5 only
    python benchmarks/transcribe.py --language pt   # Portuguese, multilingual base
    python benchmarks/transcribe.py --quick --rounds 3 --language pt --language-check-only   # the check's cost
    python benchmarks/transcribe.py --quick --device cuda --clips-dir DIR --out FILE   # gpu_check's run

On ``--device cuda`` a CTranslate2 that cannot use CUDA (ctranslate2 4.x on a CUDA 13 system) falls
back to the CPU in int8 (``load_whisper``); the result says which device ran (``device_used``).
``--clips-dir`` takes clips spoken elsewhere (``scripts/gpu_bundle.sh`` writes them with their
texts in ``texts.json``) where espeak-ng and ffmpeg are missing.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from _common import machine

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

SENTENCES = [
    "The morning train was late again, so everyone waited on the cold platform and talked about the weather.",
    "She opened the old wooden box and found a bundle of letters tied with a faded blue ribbon.",
    "Our neighbours planted tomatoes, beans and sunflowers in the small garden behind their house.",
    "The museum will be closed on Monday because the workers are repairing the roof of the main hall.",
    "He forgot his umbrella at the office, and the rain started just as he reached the bus stop.",
    "Every summer the children spend two weeks at their grandparents' farm near the river.",
    "The new library has a quiet reading room on the top floor with a beautiful view of the city.",
    "Please remember to turn off the lights and lock the back door before you leave tonight.",
    "The baker wakes up early every morning to prepare fresh bread for the whole village.",
    "After the long meeting, the team decided to finish the report on Friday afternoon.",
    "A small boat sailed slowly across the lake while the sun was setting behind the hills.",
    "My brother learned to play the guitar by watching videos and practising every evening.",
    "The doctor told him to drink more water, sleep eight hours and walk for thirty minutes a day.",
    "They painted the kitchen bright yellow, which made the whole house feel warmer and happier.",
    "The students listened carefully while the teacher explained how volcanoes are formed.",
    "We bought fresh fish, lemons and a bottle of olive oil at the market near the harbour.",
    "The old clock in the hall stopped at midnight, and nobody knew how to repair it.",
    "When the concert ended, the audience stood up and applauded for several minutes.",
    "The road to the mountain village is narrow and steep, so drivers must be very careful.",
    "Her grandmother told wonderful stories about growing up in a house by the sea.",
    "The company announced that it would open a new factory in the north of the country next year.",
    "On rainy days we like to stay at home, drink hot chocolate and read good books.",
    "The little dog chased the red ball across the park and brought it back to his owner.",
    "Scientists have discovered a new species of frog in the tropical forests of South America.",
    "The pilot announced that the plane would land twenty minutes earlier than expected.",
    "In the evening the streets of the old town fill with music, lights and the smell of food.",
    "The farmer checked the sky, saw the dark clouds and decided to bring the animals inside.",
    "Reading a good book before bed helps many people relax after a busy day at work.",
]

SENTENCES_PT = [
    "O trem da manhã atrasou de novo, então todo mundo esperou na plataforma fria falando do tempo.",
    "Ela abriu a velha caixa de madeira e encontrou um maço de cartas amarrado com uma fita azul.",
    "Os vizinhos plantaram tomate, feijão e girassol na pequena horta atrás da casa.",
    "O museu vai ficar fechado na segunda porque os operários estão consertando o telhado.",
    "Ele esqueceu o guarda-chuva no escritório, e a chuva começou quando chegou ao ponto de ônibus.",
    "Todo verão as crianças passam duas semanas na fazenda dos avós perto do rio.",
    "A nova biblioteca tem uma sala de leitura silenciosa no último andar com uma vista linda da cidade.",
    "Por favor, lembre de apagar as luzes e trancar a porta dos fundos antes de sair hoje.",
    "O padeiro acorda cedo toda manhã para preparar pão fresco para a vila inteira.",
    "Depois da reunião comprida, a equipe decidiu terminar o relatório na sexta à tarde.",
    "Um barquinho atravessou o lago devagar enquanto o sol se punha atrás dos morros.",
    "Meu irmão aprendeu a tocar violão vendo vídeos e praticando toda noite.",
    "O médico mandou ele beber mais água, dormir oito horas e caminhar meia hora por dia.",
    "Eles pintaram a cozinha de amarelo, e a casa inteira ficou mais quente e alegre.",
    "Os alunos ouviram com atenção enquanto a professora explicava como os vulcões se formam.",
    "Compramos peixe fresco, limão e uma garrafa de azeite na feira perto do porto.",
    "O relógio antigo do corredor parou à meia-noite, e ninguém sabia consertar.",
    "Quando o show terminou, a plateia ficou de pé e aplaudiu por vários minutos.",
    "A estrada para a vila da montanha é estreita e íngreme, então os motoristas precisam de cuidado.",
    "A avó dela contava histórias maravilhosas de quando cresceu numa casa perto do mar.",
    "A empresa anunciou que vai abrir uma fábrica nova no norte do país no ano que vem.",
    "Nos dias de chuva a gente gosta de ficar em casa, tomar chocolate quente e ler bons livros.",
    "O cachorrinho correu atrás da bola vermelha no parque e trouxe ela de volta para o dono.",
    "Cientistas descobriram uma nova espécie de sapo nas florestas tropicais da América do Sul.",
    "O piloto avisou que o avião ia pousar vinte minutos antes do previsto.",
    "À noite as ruas da cidade velha se enchem de música, luzes e cheiro de comida.",
    "O fazendeiro olhou o céu, viu as nuvens escuras e resolveu recolher os animais.",
    "Ler um bom livro antes de dormir ajuda muita gente a relaxar depois de um dia cheio.",
]
#: language -> (sentences, espeak-ng voice, bundled Whisper)
CORPORA = {"en": (SENTENCES, "en-us", "bundled-tiny.en"), "pt": (SENTENCES_PT, "pt-br", "bundled-base")}


def make_clips(n: int, folder: Path, language: str = "en") -> list[tuple[Path, str]]:
    """``n`` clips of 5-12 s: one or two sentences each, spoken by espeak-ng at 22050 Hz."""
    sentences, voice, _ = CORPORA[language]
    rng = random.Random(0)
    pool = sentences[:]
    rng.shuffle(pool)
    clips = []
    for i in range(n):
        text = pool[i % len(pool)]
        if rng.random() < 0.4:  # some longer clips, two sentences
            text += " " + pool[(i + 7) % len(pool)]
        raw, out = folder / f"{i}.raw.wav", folder / f"{i}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "155", "-w", str(raw), text], check=True)
        subprocess.run(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(raw), "-ac", "1", "-ar", "22050", str(out)],
            check=True,
        )
        clips.append((out, text))
    return clips


def read_clips(folder: Path, n: int) -> list[tuple[Path, str]]:
    """Up to ``n`` clips of ``folder`` with their texts (``texts.json``: file name -> text)."""
    texts = json.loads((folder / "texts.json").read_text(encoding="utf-8"))
    return [(folder / name, text) for name, text in sorted(texts.items())][:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 clips instead of 24")
    ap.add_argument("--clips", type=int, default=None, help="number of clips")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="cpu", help="cpu (int8, 2 threads) or cuda (float16)")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds, median kept (default 3, --quick 1)")
    ap.add_argument(
        "--language",
        choices=sorted(CORPORA),
        default="en",
        help="en: tiny.en on English; pt: the multilingual base on Brazilian Portuguese",
    )
    ap.add_argument("--model", default=None, help="Whisper model (default: the bundled one of --language)")
    ap.add_argument("--clips-dir", type=Path, default=None, help="ready clips and texts.json instead of espeak-ng")
    ap.add_argument("--out", type=Path, default=None, help="result file (default results/transcribe[_pt][_cuda].json)")
    ap.add_argument("--auto", action="store_true", help="judge the clips' language as --language auto does")
    ap.add_argument("--language-check-only", action="store_true", help="only the language check's rows")
    args = ap.parse_args()
    n = args.clips or (10 if args.quick else 24)
    args.rounds = args.rounds or (1 if args.quick else 3)

    from rich.console import Console
    from rich.table import Table

    import xttsft.data.transcribe as transcribe_module
    from xttsft.data.transcribe import (
        WHISPER_SR,
        _load_clip,
        clip_language_probabilities,
        load_whisper,
        transcribe_clips,
        word_error_rate,
    )

    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        clips = read_clips(args.clips_dir, n) if args.clips_dir else make_clips(n, Path(tmp), args.language)
        audios = [_load_clip(p) for p, _ in clips]
    n = len(clips)
    refs = [t for _, t in clips]
    seconds = sum(len(a) for a in audios) / WHISPER_SR
    lengths = [len(a) / WHISPER_SR for a in audios]
    console.print(f"{n} clips, {seconds:.0f} s of speech ({min(lengths):.1f}-{max(lengths):.1f} s each)")
    on_gpu = args.device == "cuda"
    lang, model_name = args.language, args.model or CORPORA[args.language][2]
    model = load_whisper(
        model_name, device=args.device, compute_type="float16" if on_gpu else "int8", cpu_threads=0 if on_gpu else 2
    )
    used = f"{model.model.device} {model.model.compute_type}"
    fallback = None if model.model.device == args.device else f"{args.device} could not run it: {used} instead"
    console.print(f"Whisper {model_name} on {used}" + (f" ({fallback})" if fallback else ""))
    transcribe_clips(model, audios[:1], lang, batch_size=1)  # warm-up

    def per_clip(beam: int) -> list[str]:
        out = []
        for a in audios:
            segments, _ = model.transcribe(a, language=lang, beam_size=beam, word_timestamps=True, vad_filter=False)
            out.append(" ".join(s.text.strip() for s in segments))
        return out

    multilingual = bool(model.model.is_multilingual)
    requested = "auto" if args.auto else lang
    suspects: list[int] = []  # clips the new check confirmed with a pass of their own, last round
    own_cpu: list[float] = []  # CPU time inside the new check itself, each round: no differencing noise
    frame_languages = transcribe_module._frame_languages

    def timed_frame_languages(*a, **k):  # type: ignore[no-untyped-def]
        c0 = time.process_time()
        try:
            return frame_languages(*a, **k)
        finally:
            own_cpu[-1] += time.process_time() - c0

    transcribe_module._frame_languages = timed_frame_languages

    def ours(beam: int, window: float, languages: bool = False) -> list[str]:
        own_cpu.append(0.0)
        res = transcribe_clips(
            model,
            audios,
            lang,
            batch_size=args.batch_size,
            beam_size=beam,
            window_seconds=window,
            languages=languages,
        )
        if languages:  # the new check: the clip's frames of the decoding's pass; a pass of its own when they fail
            c0 = time.process_time()
            probs = clip_language_probabilities(model, res, audios, lang, requested)
            suspects[:] = [i for i, (c, p) in enumerate(zip(res, probs, strict=True)) if p is not c.languages]
            own_cpu[-1] += time.process_time() - c0
        else:
            own_cpu.pop()
        return [c.text for c in res]

    def ours_checked_old(beam: int) -> list[str]:  # before issue 22: a detect_language pass per clip first
        for a in audios:
            model.detect_language(audio=a)
        return ours(beam, 30)

    bs = args.batch_size
    packed = f"ours: packed 30 s windows, batched ({bs})"
    runs = [
        ("one call per clip (upstream)", 5, lambda: per_clip(5)),
        (f"batched ({bs}), one clip per window", 5, lambda: ours(5, 0)),
        (packed, 5, lambda: ours(5, 30)),
    ]
    if args.language_check_only:
        runs = runs[2:]
    if multilingual:
        runs.append((f"{packed} + language check, new ({requested})", 5, lambda: ours(5, 30, languages=True)))
        runs.append((f"{packed} + language check, old ({requested})", 5, lambda: ours_checked_old(5)))
    if not args.quick and not args.language_check_only:  # greedy decoding: the encoder's share is larger
        runs += [
            ("one call per clip (upstream)", 1, lambda: per_clip(1)),
            (f"ours: packed 30 s windows, batched ({bs})", 1, lambda: ours(1, 30)),
        ]
    # The machine is shared: the methods run in turns, ``--rounds`` times (every other round in reverse order,
    # so that none always follows the same one), and each keeps its median. CPU time (all threads of this
    # process) is timed too: other jobs change it far less than the wall time.
    walls: list[list[float]] = [[] for _ in runs]
    cpus: list[list[float]] = [[] for _ in runs]
    hyps_of: list[list[str]] = [[] for _ in runs]
    for rnd in range(args.rounds):
        for k in range(len(runs)) if rnd % 2 == 0 else reversed(range(len(runs))):
            name, beam, fn = runs[k]
            t0, c0 = time.perf_counter(), time.process_time()
            hyps_of[k] = fn()
            walls[k].append(time.perf_counter() - t0)
            cpus[k].append(time.process_time() - c0)
            console.print(f"  round {rnd + 1}: {name}, beam {beam}: {walls[k][-1]:.1f} s ({cpus[k][-1]:.1f} s CPU)")
    rows = []
    for k, (name, beam, _) in enumerate(runs):
        wall = statistics.median(walls[k])
        rows.append(
            {
                "method": name,
                "beam": beam,
                "clips": n,
                "audio_s": round(seconds, 1),
                "wall_s": round(wall, 2),
                "wall_s_each_round": [round(w, 2) for w in walls[k]],
                "cpu_s": round(statistics.median(cpus[k]), 2),
                "cpu_s_each_round": [round(c, 2) for c in cpus[k]],
                "x_realtime": round(seconds / wall, 2),
                "wer": round(word_error_rate(refs, hyps_of[k]), 4),
            }
        )

    mine = next(r for r in rows if r["method"] == packed)
    ratios: dict[str, float] = {}
    if not args.language_check_only:
        base, alone = rows[:2]
        ratios |= {
            "ours_vs_one_call_per_clip_speed": round(base["wall_s"] / mine["wall_s"], 2),
            "batched_alone_vs_one_call_per_clip_speed": round(base["wall_s"] / alone["wall_s"], 2),
            "ours_minus_one_call_per_clip_wer": round(mine["wer"] - base["wer"], 4),
        }
    greedy = [r for r in rows if r["beam"] == 1]
    if greedy:
        ratios["ours_vs_one_call_per_clip_speed_greedy"] = round(greedy[0]["wall_s"] / greedy[1]["wall_s"], 2)
        ratios["ours_minus_one_call_per_clip_wer_greedy"] = round(greedy[1]["wer"] - greedy[0]["wer"], 4)
    checked = [r for r in rows if "language check" in r["method"]]
    if checked:  # the added cost as a share of the transcription, per round (same machine load) and median
        k0 = next(k for k, r in enumerate(runs) if r[0] == packed)
        shares = {  # the check's added share of the packed transcription, per round: (new, old)
            unit: [[round(t[k0 + 1 + j][i] / t[k0][i] - 1, 3) for i in range(args.rounds)] for j in range(2)]
            for unit, t in (("cpu", cpus), ("wall", walls))
        }
        for unit, (new, old) in shares.items():
            ratios |= {
                f"language_check_new_added_{unit}_share": round(statistics.median(new), 3),
                f"language_check_old_added_{unit}_share": round(statistics.median(old), 3),
                f"language_check_new_added_{unit}_share_each_round": new,  # type: ignore[dict-item]
                f"language_check_old_added_{unit}_share_each_round": old,  # type: ignore[dict-item]
            }
        ratios["language_check_old_vs_new_added_cpu"] = round(
            ratios["language_check_old_added_cpu_share"] / max(ratios["language_check_new_added_cpu_share"], 1e-3), 1
        )
        ratios["language_check_new_confirmed_clips"] = len(suspects)
        k1 = k0 + 1  # the new check's own CPU time against the rest of its run (the transcription), each round
        own = [round(o / (c - o), 3) for o, c in zip(own_cpu, cpus[k1], strict=True)]
        ratios["language_check_new_own_cpu_share"] = round(statistics.median(own), 3)
        ratios["language_check_new_own_cpu_share_each_round"] = own  # type: ignore[assignment]
    table = Table(title=f"transcription ({lang}): {model_name} int8, 2 threads, word timestamps", title_justify="left")
    for col in ("method", "beam", "clips", "audio s", "wall s", "x realtime", "WER"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in rows:
        table.add_row(
            r["method"],
            str(r["beam"]),
            str(r["clips"]),
            f"{r['audio_s']:.0f}",
            f"{r['wall_s']:.1f}",
            f"{r['x_realtime']:.1f}",
            f"{r['wer']:.3f}",
        )
    console.print(table)
    if not args.language_check_only:
        console.print(
            f"ours vs one call per clip, beam 5: [bold]{ratios['ours_vs_one_call_per_clip_speed']:.2f}x[/] faster, "
            f"WER {mine['wer']:.3f} vs {base['wer']:.3f}"
        )
    if checked:
        for unit in ("cpu", "wall"):
            new, old = (ratios[f"language_check_{w}_added_{unit}_share"] for w in ("new", "old"))
            console.print(
                f"per-clip language check, added {unit} time (share of the packed transcription): new [bold]{new:+.1%}"
                f"[/] (rounds {shares[unit][0]}), old {old:+.1%} (rounds {shares[unit][1]})"
            )
        console.print(
            f"the new check's own CPU time: [bold]{ratios['language_check_new_own_cpu_share']:.1%}[/] of the "
            f"transcription (rounds {own}); old/new added CPU: {ratios['language_check_old_vs_new_added_cpu']}x; "
            "the new check confirmed "
            f"{len(suspects)} clip(s) with a pass of their own"
        )
    if greedy:
        console.print(
            f"ours vs one call per clip, greedy: [bold]{ratios['ours_vs_one_call_per_clip_speed_greedy']:.2f}x[/]"
            f" faster, WER {greedy[1]['wer']:.3f} vs {greedy[0]['wer']:.3f}"
        )
    suffix = ("" if lang == "en" else f"_{lang}") + ("_cuda" if on_gpu else "")
    suffix += ("_language_check" if args.language_check_only else "") + ("_auto" if args.auto else "")
    result = {
        "name": "transcribe" + suffix,
        "date": date.today().isoformat(),
        "machine": machine(),
        "notes": f"{n} espeak-ng {lang} clips of {min(lengths):.1f}-{max(lengths):.1f} s; {model_name} (CTranslate2 "
        f"{used}{', cpu_threads=2' if not on_gpu else ''}); median of {args.rounds} interleaved rounds; the machine is shared with other "
        "jobs, so speeds vary between runs (see wall_s_each_round).",
        "rows": rows,
        "ratios": ratios,
        "model": model_name,
        "device_used": used,
        "fallback": fallback,
    }
    out = args.out or HERE / "results" / f"transcribe{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
