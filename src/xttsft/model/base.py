"""The XTTS-v2 base model: find it (Hub download at a pinned revision, a local folder, or the tiny
random test model built once), check its files and load it into coqui's ``Xtts``."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xttsft.errors import MissingDependencyError, ModelNotFoundError
from xttsft.io import atomic_write_json
from xttsft.progress import Progress, no_progress

if TYPE_CHECKING:  # pragma: no cover
    from TTS.tts.models.xtts import Xtts


__all__ = [
    "XTTS_FILES",
    "HF_REPO_ID",
    "HF_REVISION",
    "TINY_SPEC",
    "TINY_NOISE_WARNING",
    "cache_dir",
    "safe_torch_load",
    "validate_base_dir",
    "resolve_base_model",
    "build_tiny_model",
    "is_tiny",
    "base_identity",
    "load_xtts",
    "fuse_gelu",
    "load_dvae",
    "xtts_v2_args",
]

log = logging.getLogger(__name__)

#: The files of an XTTS-v2 model folder (the Hub repo's layout).
XTTS_FILES: tuple[str, ...] = (
    "model.pth",
    "config.json",
    "vocab.json",
    "dvae.pth",
    "mel_stats.pth",
    "speakers_xtts.pth",
)
HF_REPO_ID = "coqui/XTTS-v2"
#: Pinned revision of the Hub repo (v2.0.3, the last commit, December 2023).
HF_REVISION = "6c2b0d75eae4b7047358e3b6bd9325f857d43f77"
TINY_SPEC = "tiny"
#: Bump when the tiny recipe changes, so old caches are not reused.
TINY_VERSION = 1
TINY_MARKER = "xttsft_tiny.json"
TINY_NOISE_WARNING = (
    "The 'tiny' base model is a small RANDOM XTTS for tests and the offline demo: "
    "anything trained or synthesized with it is noise, not speech."
)
#: Languages of the tiny model's vocabulary (accented Latin letters included).
TINY_LANGUAGES = ("en", "pt", "es", "fr", "de", "it")
#: Audio tokens of the tiny GPT: 250 codes = 11.6 s at 22050 Hz (coqui's recipe limit);
#: small so that a random GPT, which never emits STOP, finishes generating quickly.
TINY_MAX_AUDIO_TOKENS = 250

_PTH_FILES = ("model.pth", "dvae.pth", "mel_stats.pth", "speakers_xtts.pth")


# --------------------------------------------------------------------------- cache
def _normal_dir_mode(path: Path) -> None:
    """mkdtemp makes 0700 folders; finished model and checkpoint folders are ordinary ones."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)


def model_limits(gpt_max_audio_tokens: int) -> int:
    """The longest clip (samples at 22050 Hz) the GPT's position table holds: codes + start/stop/pad.

    One limit for ``build`` and ``train`` (the GPT's own ``gpt_max_audio_tokens``)."""
    return (gpt_max_audio_tokens - 3) * 1024


def cache_dir() -> Path:
    """xttsft's cache: ``$XTTSFT_CACHE_DIR`` or ``~/.cache/xttsft``."""
    env = os.environ.get("XTTSFT_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "xttsft"


def safe_torch_load(path: Path, map_location: str = "cpu", mmap: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True``; a bad file becomes a ModelNotFoundError naming it.

    Original XTTS-v2 ``model.pth`` files pickle coqui's config classes; those few classes
    (and nothing else) are allow-listed through coqui's own ``_legacy_safe_globals``.
    """
    import pickle

    import torch

    path = Path(path)
    try:
        try:
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
        except pickle.UnpicklingError:
            from TTS.tts.models.xtts import _legacy_safe_globals

            with _legacy_safe_globals():
                return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ModelNotFoundError(
            f"{path} is corrupt or not a PyTorch weights file ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}).",
            hint="Delete the file and fetch it again (for coqui/XTTS-v2 it is downloaded again automatically).",
        ) from None


# --------------------------------------------------------------------------- resolve
def validate_base_dir(base_dir: Path) -> Path:
    """Check that ``base_dir`` holds every file of :data:`XTTS_FILES`, readable.

    Every missing, empty or corrupt file is named in one :class:`ModelNotFoundError`.
    The check is cheap (JSON parses, ``.pth`` files are PyTorch zip archives); the
    weights themselves are checked when loaded.
    """
    base_dir = Path(base_dir).expanduser()
    if not base_dir.is_dir():
        raise ModelNotFoundError(
            f"Base model folder {base_dir} does not exist.",
            hint=f"Pass a folder with {', '.join(XTTS_FILES)}, or 'coqui/XTTS-v2' (downloaded once), or 'tiny'.",
        )
    problems: list[str] = []
    for name in XTTS_FILES:
        p = base_dir / name
        if not p.is_file():
            problems.append(f"{name}: missing")
        elif p.stat().st_size == 0:
            problems.append(f"{name}: empty")
        elif name.endswith(".json"):
            try:
                json.loads(p.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                problems.append(f"{name}: not valid JSON ({exc})")
        elif name in _PTH_FILES and not zipfile.is_zipfile(p):
            problems.append(f"{name}: corrupt (not a PyTorch zip archive)")
    if problems:
        raise ModelNotFoundError(
            f"Base model folder {base_dir} is incomplete: " + "; ".join(problems) + ".",
            hint=(
                f"Download the missing files from https://huggingface.co/{HF_REPO_ID} "
                f"(`hf download {HF_REPO_ID} --revision {HF_REVISION} --local-dir {base_dir}`), "
                "or use --base-model coqui/XTTS-v2 to let xttsft fetch them."
            ),
        )
    return base_dir


def resolve_base_model(spec: str, progress: Progress | None = None) -> Path:
    """The local folder of base model ``spec`` (see the module docstring)."""
    spec = str(spec).strip()
    if spec.lower() == TINY_SPEC:
        return build_tiny_model(progress=progress)
    if spec.lower() == HF_REPO_ID.lower():
        return _download_hub(progress=progress)
    path = Path(spec).expanduser()
    if path.exists() or "/" not in spec or spec.startswith((".", "/", "~")):
        return validate_base_dir(path)
    raise ModelNotFoundError(
        f"Unknown base model {spec!r}: not a local folder, not {HF_REPO_ID!r} and not 'tiny'.",
        hint=f"Use --base-model {HF_REPO_ID} (default), a folder with {', '.join(XTTS_FILES)}, or tiny.",
    )


def _sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while data := fh.read(chunk):
            h.update(data)
    return h.hexdigest()


def _download_hub(progress: Progress | None = None) -> Path:
    """Download (once) the XTTS-v2 files at :data:`HF_REVISION`; verify size and SHA-256."""
    progress = progress or no_progress
    try:
        import huggingface_hub as hf
    except ImportError:  # pragma: no cover - a declared dependency
        raise MissingDependencyError("huggingface_hub is not installed.", hint="pip install huggingface-hub") from None

    local, missing = _cached_files(hf)  # works offline
    verified_file = cache_dir() / "verified" / f"xtts-v2-{HF_REVISION}.json"
    verified: dict[str, Any] = {}
    if verified_file.is_file():
        with contextlib.suppress(ValueError):
            verified = json.loads(verified_file.read_text())
    if not missing and all(verified.get(n, {}).get("size") == local[n].stat().st_size for n in XTTS_FILES):
        return local["model.pth"].parent

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    if offline and not missing:
        log.warning("XTTS-v2 files found in the Hugging Face cache but not verified (offline); checking them locally.")
        return validate_base_dir(local["model.pth"].parent)
    if offline:
        raise ModelNotFoundError(
            f"XTTS-v2 files missing from the local cache and HF_HUB_OFFLINE is set: {', '.join(missing)}.",
            hint=_DOWNLOAD_HOW,
        )
    expected = _expected_files(hf, missing)
    progress(
        total=sum(int(e["size"] or 0) for e in expected.values()), completed=0, description=f"Downloading {HF_REPO_ID}"
    )
    record: dict[str, Any] = {}
    for name in XTTS_FILES:
        exp = expected.get(name, {})
        local[name] = _download_verified(hf, name, exp)
        record[name] = {"size": local[name].stat().st_size, "sha256": exp.get("sha256")}
        progress(advance=int(exp.get("size") or record[name]["size"]))

    atomic_write_json(verified_file, record)
    return local["model.pth"].parent


_DOWNLOAD_HOW = (
    f"Connect to the internet and run again, or download them yourself: "
    f"`hf download {HF_REPO_ID} --revision {HF_REVISION} --local-dir DIR` "
    f"(or from https://huggingface.co/{HF_REPO_ID}/tree/{HF_REVISION}) and pass --base-model DIR "
    "(TRAIN_BASE_MODEL=DIR)."
)


def _cached_files(hf: Any) -> tuple[dict[str, Path], list[str]]:
    """The XTTS-v2 files already in the Hugging Face cache, and the names of those that are not."""
    local: dict[str, Path] = {}
    missing: list[str] = []
    for name in XTTS_FILES:
        try:
            local[name] = Path(hf.hf_hub_download(HF_REPO_ID, name, revision=HF_REVISION, local_files_only=True))
        except Exception:  # noqa: BLE001 - not cached, or any cache problem: fetch it
            missing.append(name)
    return local, missing


def _expected_files(hf: Any, missing: list[str]) -> dict[str, dict[str, Any]]:
    """Size and SHA-256 of every file, as the Hub lists them at :data:`HF_REVISION`."""
    try:
        infos = hf.HfApi().get_paths_info(HF_REPO_ID, list(XTTS_FILES), revision=HF_REVISION, expand=True)
    except Exception as exc:  # noqa: BLE001 - network, DNS, proxy, HTTP errors
        raise ModelNotFoundError(
            f"Cannot reach the Hugging Face Hub for {HF_REPO_ID} ({type(exc).__name__}); "
            f"missing here: {', '.join(missing) or 'none'}.",
            hint=_DOWNLOAD_HOW,
        ) from None
    expected: dict[str, dict[str, Any]] = {}
    for info in infos:
        lfs = getattr(info, "lfs", None)
        expected[info.path] = {
            "size": getattr(info, "size", None),
            "sha256": getattr(lfs, "sha256", None) if lfs is not None else None,
        }
    return expected


def _download_verified(hf: Any, name: str, exp: dict[str, Any]) -> Path:
    """Download one file (or take it from the cache) and check it against the Hub's size and hash;
    a corrupt file is deleted, so the next run downloads it again."""
    try:
        path = Path(hf.hf_hub_download(HF_REPO_ID, name, revision=HF_REVISION))
    except Exception as exc:  # noqa: BLE001
        raise ModelNotFoundError(f"Download of {HF_REPO_ID}/{name} failed: {exc}", hint=_DOWNLOAD_HOW) from None
    size = path.stat().st_size
    problems = []
    if exp.get("size") is not None and size != exp["size"]:
        problems.append(f"size {size} != {exp['size']}")
    if exp.get("sha256") and _sha256(path) != exp["sha256"]:
        problems.append("SHA-256 does not match the Hub's")
    if problems:
        with contextlib.suppress(OSError):
            path.unlink()
        raise ModelNotFoundError(
            f"Downloaded {name} is corrupt ({'; '.join(problems)}); it was deleted.",
            hint="Run the command again to download it again.",
        )
    return path


# --------------------------------------------------------------------------- tiny
def _tiny_corpus() -> list[str]:
    return [
        "The quick brown fox jumps over the lazy dog. Hello world, this is a test sentence!",
        "She sells sea shells by the sea shore; how much wood would a woodchuck chuck?",
        "Olá, tudo bem? A ação e a emoção do coração são ótimas. Você está à vontade, não é?",
        "Pão, maçã, avó, avô, três, lições, órgão, júri, pôr, têm, é, há, àquela, última.",
        "El niño español comió piña y jamón. ¿Qué tal? ¡Muy bien! Año, señor, corazón.",
        "Le garçon français a mangé une crème brûlée à l'hôtel; où est la fenêtre? Noël, naïf.",
        "Der Bär läuft über die Straße; schöne Grüße aus München. Fräulein, größer.",
        "Perché la città è così bella? Però, più, caffè, università.",
        "Numbers one two three four five six seven eight nine ten hundred thousand.",
    ]


def _tiny_alphabet() -> list[str]:
    chars = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    chars |= set(".,;:!?¡¿'\"-()[]/&%$€@#*+=<>…–—«»“”‘’")
    chars |= set("àáâãäåçèéêëìíîïñòóôõöùúûüýÿœæßÀÁÂÃÄÅÇÈÉÊËÌÍÎÏÑÒÓÔÕÖÙÚÛÜÝŒÆ")
    return sorted(chars)


def _build_tiny_vocab(out: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    specials = ["[STOP]", "[UNK]", "[SPACE]", "[START]"] + [f"[{lang}]" for lang in TINY_LANGUAGES]
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=256, special_tokens=specials, initial_alphabet=_tiny_alphabet(), show_progress=False
    )
    corpus = [t.lower() for t in _tiny_corpus()] + _tiny_corpus()
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.save(str(out))


def _tiny_config(vocab_file: Path):
    from TTS.tts.configs.xtts_config import XttsAudioConfig, XttsConfig
    from TTS.tts.models.xtts import XttsArgs

    width = 64
    args = XttsArgs(
        gpt_layers=2,
        gpt_n_model_channels=width,
        gpt_n_heads=2,
        gpt_max_audio_tokens=TINY_MAX_AUDIO_TOKENS,
        gpt_max_text_tokens=402,
        gpt_max_prompt_tokens=70,
        gpt_num_audio_tokens=1026,
        gpt_start_audio_token=1024,
        gpt_stop_audio_token=1025,
        gpt_code_stride_len=1024,
        gpt_use_masking_gt_prompt_approach=True,
        gpt_use_perceiver_resampler=True,
        decoder_input_dim=width,  # the HiFi-GAN decoder takes the GPT's latents
        d_vector_dim=512,
    )
    config = XttsConfig(
        model_args=args,
        audio=XttsAudioConfig(sample_rate=22050, output_sample_rate=24000, dvae_sample_rate=22050),
        languages=list(TINY_LANGUAGES),
    )
    config.model_args.tokenizer_file = ""  # vocab.json sits next to model.pth
    return config


def _new_dvae(hidden_dim: int = 512, codebook_dim: int = 512, num_resnet_blocks: int = 3, num_tokens: int = 1024):
    """The DVAE GPTTrainer builds for XTTS-v2 (defaults); the tiny model shrinks its widths."""
    from TTS.tts.layers.xtts.dvae import DiscreteVAE

    return DiscreteVAE(
        channels=80,
        normalization=None,
        positional_dims=1,
        num_tokens=num_tokens,
        codebook_dim=codebook_dim,
        hidden_dim=hidden_dim,
        num_resnet_blocks=num_resnet_blocks,
        kernel_size=3,
        num_layers=2,
        use_transposed_convs=False,
    )


def _dvae_dims(state: dict[str, Any]) -> dict[str, int]:
    """DVAE widths read from its weights (XTTS-v2: 512/512/3 blocks; tiny: smaller)."""
    try:
        embed = state["codebook.embed"]
        return {
            "hidden_dim": int(state["encoder.0.0.weight"].shape[0]),
            "codebook_dim": int(embed.shape[0]),
            "num_tokens": int(embed.shape[1]),
            "num_resnet_blocks": sum(1 for k in state if re.fullmatch(r"encoder\.\d+\.net\.0\.weight", k)),
        }
    except (KeyError, AttributeError, IndexError):
        return {}


def build_tiny_model(progress: Progress | None = None, dest: Path | None = None) -> Path:
    """Build (once) the tiny random XTTS into the cache and return its folder.

    Same six files as XTTS-v2, loaded by the same code. Built into a temporary
    folder and renamed, so concurrent builders and crashes never leave half a model.
    """
    dest = Path(dest) if dest is not None else cache_dir() / f"tiny-xtts-v{TINY_VERSION}"
    if (dest / TINY_MARKER).is_file():
        with contextlib.suppress(ModelNotFoundError):
            return validate_base_dir(dest)
        shutil.rmtree(dest, ignore_errors=True)
    progress = progress or no_progress
    progress(total=len(XTTS_FILES), description="Building the tiny random XTTS")
    log.info("Building the tiny random XTTS into %s (once)", dest)

    import torch
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
    from TTS.tts.models.xtts import Xtts

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    _normal_dir_mode(tmp)
    try:
        _build_tiny_vocab(tmp / "vocab.json")
        progress(advance=1)
        config = _tiny_config(tmp / "vocab.json")
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(0)
        try:
            model = Xtts(config)
            model.tokenizer = VoiceBpeTokenizer(vocab_file=str(tmp / "vocab.json"))
            model.init_models()
            # mel_stats: per-channel normaliser of log-mels (random model: 1 keeps log-mels as they are)
            mel_stats = torch.ones(80)
            model.mel_stats.copy_(mel_stats)
            torch.save({"model": model.state_dict()}, tmp / "model.pth")
            progress(advance=1)
            config.save_json(str(tmp / "config.json"))
            progress(advance=1)
            torch.save(_new_dvae(hidden_dim=32, codebook_dim=32, num_resnet_blocks=1).state_dict(), tmp / "dvae.pth")
            progress(advance=1)
            torch.save(mel_stats, tmp / "mel_stats.pth")
            progress(advance=1)
            width = config.model_args.gpt_n_model_channels
            speakers = {
                "Tiny Random": {
                    "gpt_cond_latent": torch.randn(1, 32, width),
                    "speaker_embedding": torch.randn(1, config.model_args.d_vector_dim, 1),
                }
            }
            torch.save(speakers, tmp / "speakers_xtts.pth")
            progress(advance=1)
        finally:
            torch.random.set_rng_state(gen_state)
        (tmp / TINY_MARKER).write_text(
            json.dumps({"tiny": True, "version": TINY_VERSION, "warning": TINY_NOISE_WARNING}, indent=2) + "\n"
        )
        try:
            os.replace(tmp, dest)
        except OSError:  # another process finished first: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return validate_base_dir(dest)


def is_tiny(base_dir: Path) -> bool:
    """True for the tiny random model (or any XTTS too small to be a real voice)."""
    base_dir = Path(base_dir)
    if (base_dir / TINY_MARKER).is_file():
        return True
    try:
        args = json.loads((base_dir / "config.json").read_text(encoding="utf-8")).get("model_args", {})
    except (OSError, ValueError):
        return False
    return int(args.get("gpt_layers", 30)) <= 4 and int(args.get("gpt_n_model_channels", 1024)) <= 256


def base_identity(base_dir: Path) -> dict[str, Any]:
    """What identifies a base model folder: its path, the Hub revision if any, and file sizes."""
    base_dir = Path(base_dir)
    ident: dict[str, Any] = {"dir": str(base_dir), "tiny": is_tiny(base_dir)}
    if HF_REVISION in base_dir.parts:
        ident["hub"] = {"repo": HF_REPO_ID, "revision": HF_REVISION}
    ident["sizes"] = {n: (base_dir / n).stat().st_size for n in XTTS_FILES if (base_dir / n).exists()}
    return ident


# --------------------------------------------------------------------------- load
def load_xtts(base_dir: Path, device: str = "cpu", *, for_training: bool = False, keep_decoder: bool = True) -> Xtts:
    """Load an XTTS-v2 model folder into coqui's ``Xtts``, weights included.

    Mirrors ``Xtts.load_checkpoint`` but reads every file with ``weights_only=True``
    and never rewrites it. ``for_training`` skips the inference set-up (the GPT is
    left ready for ``forward``); ``keep_decoder=False`` drops the HiFi-GAN decoder
    after loading (training does not need it: about 100 MB less).
    """
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
    from TTS.tts.layers.xtts.xtts_manager import SpeakerManager
    from TTS.tts.models.xtts import Xtts

    base_dir = validate_base_dir(base_dir)
    config = XttsConfig()
    try:
        config.load_json(str(base_dir / "config.json"))
    except Exception as exc:  # noqa: BLE001 - coqpit raises many kinds
        raise ModelNotFoundError(
            f"{base_dir / 'config.json'} is not an XTTS config ({type(exc).__name__}: {exc}).",
            hint="Use the config.json that came with the model.",
        ) from None
    config.model_args.tokenizer_file = str(base_dir / "vocab.json")
    model = Xtts(config)
    try:
        model.tokenizer = VoiceBpeTokenizer(vocab_file=str(base_dir / "vocab.json"))
    except Exception as exc:  # noqa: BLE001
        raise ModelNotFoundError(
            f"{base_dir / 'vocab.json'} is not a tokenizer file ({exc}).", hint="Use the vocab.json of the model."
        ) from None
    model.init_models()
    fuse_gelu(model.gpt.gpt)
    ckpt = safe_torch_load(base_dir / "model.pth", mmap=True)
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ModelNotFoundError(f"{base_dir / 'model.pth'} holds no model weights.", hint="Fetch it again.")
    ignore = ("torch_mel_spectrogram_style_encoder", "torch_mel_spectrogram_dvae", "dvae")
    state = {k.removeprefix("xtts."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if k.split(".")[0] not in ignore and not k.startswith("gpt.gpt_inference")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("gpt.gpt_inference")]
    if missing or unexpected:
        raise ModelNotFoundError(
            f"{base_dir / 'model.pth'} does not match its config.json: "
            f"{len(missing)} missing weights (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}).",
            hint="The files of the folder come from different models; fetch them together again.",
        )
    del ckpt, state
    speakers = base_dir / "speakers_xtts.pth"
    safe_torch_load(speakers)  # checks the file without trusting coqui's loader
    model.speaker_manager = SpeakerManager(str(speakers))
    if not keep_decoder:
        model.hifigan_decoder = None
    model.to(device)
    if for_training:
        model.eval()
        model.gpt.train()
        # Xtts.eval() builds the inference GPT; training does not need it
        if hasattr(model.gpt, "gpt_inference"):
            del model.gpt.gpt_inference
        if hasattr(model.gpt.gpt, "wte"):
            del model.gpt.gpt.wte
    else:
        model.gpt.init_gpt_for_inference(kv_cache=model.args.kv_cache, use_deepspeed=False)
        model.eval()
    log.debug("Loaded XTTS from %s on %s", base_dir, device)
    return model


def fuse_gelu(gpt2) -> int:
    """Give the GPT-2 blocks PyTorch's fused tanh GELU in place of transformers' ``gelu_new``.

    ``gelu_new`` is the same function written as five elementwise tensor operations, each
    of which autograd keeps for the backward pass; ``nn.GELU(approximate="tanh")`` is one
    kernel (in fp32 the outputs agree to about 2e-7; under bf16/fp16 autocast the fused kernel
    rounds once instead of five times). On the full-size GPT a fine-tune step (forward +
    backward) took 0.84-0.88x the time, and an epoch 0.85x the peak memory
    (benchmarks/RESULTS.md: train_gelu, train_vs_coqui). Returns how many blocks were changed;
    the weights are untouched, so checkpoints are the same either way.
    """
    import torch
    from transformers.activations import NewGELUActivation

    swapped = 0
    for block in getattr(gpt2, "h", []):
        if isinstance(getattr(block.mlp, "act", None), NewGELUActivation):
            block.mlp.act = torch.nn.GELU(approximate="tanh")
            swapped += 1
    if swapped:
        gpt2.config.activation_function = "gelu_pytorch_tanh"
    return swapped


def load_dvae(base_dir: Path, device: str = "cpu"):
    """The frozen DVAE (``dvae.pth``) that turns 22.05 kHz mels into audio codes."""
    state = safe_torch_load(Path(base_dir) / "dvae.pth")
    dims = _dvae_dims(state) if isinstance(state, dict) else {}
    missing = ["codebook.embed"]
    if dims:
        dvae = _new_dvae(**dims)
        missing, _ = dvae.load_state_dict(state, strict=False)
    if missing:
        raise ModelNotFoundError(
            f"{Path(base_dir) / 'dvae.pth'} is not an XTTS-v2 DVAE ({len(missing)} missing weights).",
            hint="Use the dvae.pth of the model.",
        )
    dvae.eval().requires_grad_(False)
    return dvae.to(device)


def xtts_v2_args(number_text_tokens: int = 6681):
    """``XttsArgs`` of the real XTTS-v2 (config.json of coqui/XTTS-v2): 30 layers, width 1024.

    For building the full-size architecture with random weights (tests, benchmark).
    """
    from TTS.tts.models.xtts import XttsArgs

    return XttsArgs(
        gpt_layers=30,
        gpt_n_model_channels=1024,
        gpt_n_heads=16,
        gpt_max_audio_tokens=605,
        gpt_max_text_tokens=402,
        gpt_max_prompt_tokens=70,
        gpt_number_text_tokens=number_text_tokens,
        gpt_start_text_token=261,
        gpt_stop_text_token=0,
        gpt_num_audio_tokens=1026,
        gpt_start_audio_token=1024,
        gpt_stop_audio_token=1025,
        gpt_code_stride_len=1024,
        gpt_use_masking_gt_prompt_approach=True,
        gpt_use_perceiver_resampler=True,
        decoder_input_dim=1024,
        d_vector_dim=512,
    )
