#!/usr/bin/env bash
# Fills .whl/ (git-ignored) with what the lent, offline GPU machine lacks for scripts/gpu_check.py
# (docs/gpu-check.md): its image has Python 3.12, torch 2.11.0+cu130, transformers 5.17, peft, typer,
# rich, numpy, scipy, numba, scikit-learn and more, but not coqui-tts and what it imports, pydantic,
# pydantic-settings, soundfile, librosa, torchcodec, faster-whisper, ctranslate2, av, fastapi,
# starlette, uvicorn or flask.
#
#   .whl/*.whl                cp312 manylinux wheels: pip install --no-index --no-deps --target
#   .whl/whisper.tar.xz       faster-whisper, ctranslate2 and av unpacked, their .so files stripped
#                             of debug info, xz-compressed: as wheels they are 80 MB, here about 36
#   .whl/whisper-tiny-random  a CTranslate2 Whisper with tiny.en's vocabulary and random weights
#                             (1 layer, width 32): tiny.en itself is 73 MB and cannot travel
#   .whl/audio                ref.wav and clips/ spoken here by espeak-ng (the lent machine has none)
#
# A run carries at most 64 MiB, the working tree included: the script prints the total and fails
# above it. --bundle train leaves the Whisper part out, --bundle whisper the training and serve part.
#
#   bash scripts/gpu_bundle.sh                 # everything, one run (default)
#   bash scripts/gpu_bundle.sh --bundle train  # training, synth, serve and pytest only
set -euo pipefail
cd "$(dirname "$0")/.."

BUNDLE=all
DEST=.whl
LIMIT=$((64 * 1024 * 1024))
while [ $# -gt 0 ]; do
  case "$1" in
    --bundle) BUNDLE="$2"; shift 2 ;;
    --dest) DEST="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "gpu_bundle.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$BUNDLE" in train|whisper|all) ;; *) echo "gpu_bundle.sh: --bundle is train, whisper or all" >&2; exit 2 ;; esac

PY=${PYTHON:-python3}           # any Python with pip: the downloads are for cp312 whatever runs them
VENV_PY=${VENV_PY:-.venv/bin/python}  # the project's venv (make install): speaks the audio, builds the model
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/xttsft/gpu-bundle
# Pinned to what runs with torch 2.11 / transformers 5.17 here (scripts/gpu_dryrun.sh checks it).
# torchcodec 0.11 is the release for torch 2.11; coqui-tts refuses to import without it.
TRAIN=(coqui-tts==0.28.0 coqui-tts-trainer==0.4.0 coqpit-config==0.2.5 anyascii==0.3.3 ko-speech-tools==0.1.0
       num2words==0.5.14 monotonic-alignment-search==0.2.1 pysbd==0.3.4 torchcodec==0.11.1
       librosa==0.11.0 audioread==3.1.0 decorator==5.3.2 pooch==1.9.0 platformdirs==4.14.9)
# What xttsft itself needs that the image lacks (settings, audio I/O): the Whisper run needs it too.
# typing-extensions travels although the image has one: pydantic 2.14 needs >= 4.16, the image's is unread.
BASE=(pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
      typing-extensions==4.16.0 pydantic-settings==2.16.3 python-dotenv==1.2.4 soundfile==0.14.0 cffi==2.1.1
      pycparser==3.12 soxr==1.1.0)
# The serve step (benchmarks/serve.py): xttsft serve's web stack, and flask for coqui's own server.
# The image has their other dependencies (anyio, h11, click, idna, annotated-doc, werkzeug, jinja2,
# markupsafe, prometheus-client, httpx for the benchmark's client); fastapi 0.165 imports
# opentelemetry-api. The openai client does not travel: only the tests use it, not the benchmark.
SERVE=(fastapi==0.165.0 starlette==1.10.0 uvicorn==0.55.0 opentelemetry-api==1.45.3 flask==3.1.3
       itsdangerous==2.2.0 blinker==1.9.0)
WHISPER=(faster-whisper==1.2.1 ctranslate2==4.8.5 av==18.1.0)

download() {  # download DIR SPEC...: cp312 manylinux wheels, no dependencies (each one is named)
  local dir=$1; shift
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$dir" "$@" 2>&1 | { grep -v 'is ignored: it is neither a file' || true; }  # local index folders it skips
  return "${PIPESTATUS[0]}"
}

whisper_tarball() {  # the three Whisper packages as an unpacked, stripped, xz-compressed site folder
  local key tar work
  key=$(printf '%s\n' "${WHISPER[@]}" | sha256sum | cut -c1-12)
  tar="$CACHE/whisper-$key.tar.xz"
  if [ ! -s "$tar" ]; then
    command -v strip >/dev/null || { echo "gpu_bundle.sh: needs strip (apt-get install binutils)" >&2; exit 1; }
    work=$(mktemp -d)
    download "$work/wheels" "${WHISPER[@]}"
    mkdir -p "$work/site" "$CACHE"
    for w in "$work"/wheels/*.whl; do "$PY" -m zipfile -e "$w" "$work/site"; done
    find "$work/site" -name '*.so*' -type f -exec strip --strip-debug {} +
    echo "compressing the Whisper packages (about 2 minutes) ..."
    tar -C "$work/site" -cf - . | xz -6 -T0 > "$tar.part"
    mv "$tar.part" "$tar"
    rm -rf "$work"
  fi
  cp "$tar" "$DEST/whisper.tar.xz"
}

random_whisper() {  # a tiny random CTranslate2 Whisper that faster-whisper loads like tiny.en
  "$VENV_PY" - "$DEST/whisper-tiny-random" <<'EOF'
import json, shutil, sys
from pathlib import Path

import torch
from ctranslate2.converters.transformers import WhisperLoader
from transformers import WhisperConfig, WhisperForConditionalGeneration

from xttsft.bundled_whisper import tiny_en_path

out, tiny = Path(sys.argv[1]), tiny_en_path()
out.mkdir(parents=True)
ref = json.loads((tiny / "config.json").read_text())
vocab = (tiny / "vocabulary.txt").read_text(encoding="utf-8").splitlines()
torch.manual_seed(0)
cfg = WhisperConfig(vocab_size=len(vocab), num_mel_bins=80, d_model=32, encoder_layers=1, decoder_layers=1,
                    encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                    max_source_positions=1500, max_target_positions=448)
spec = WhisperLoader().get_model_spec(WhisperForConditionalGeneration(cfg).eval())
spec.config.suppress_ids, spec.config.suppress_ids_begin = ref["suppress_ids"], ref["suppress_ids_begin"]
spec.config.lang_ids, spec.config.alignment_heads = ref["lang_ids"], [[0, 0], [0, 1]]
spec.register_vocabulary(vocab)
spec.validate()
spec.optimize(quantization="int8")
spec.save(str(out))
shutil.copy(tiny / "tokenizer.json", out / "tokenizer.json")
EOF
}

speech() {  # ref.wav for synth, clips/ + texts.json for Whisper: espeak-ng here, none there
  "$VENV_PY" - "$DEST/audio" <<'EOF'
import json, sys
from pathlib import Path

sys.path.insert(0, "benchmarks")
from _common import make_reference
from transcribe import make_clips

out = Path(sys.argv[1])
(out / "clips").mkdir(parents=True)
make_reference(out / "ref.wav")
clips = make_clips(10, out / "clips")
for p in (out / "clips").glob("*.raw.wav"):
    p.unlink()
(out / "clips" / "texts.json").write_text(json.dumps({p.name: t for p, t in clips}, indent=1) + "\n")
EOF
}

[ -x "$VENV_PY" ] || { echo "gpu_bundle.sh: $VENV_PY is missing: run make install first" >&2; exit 1; }
rm -rf "$DEST"
mkdir -p "$DEST"
case "$BUNDLE" in
  train) download "$DEST" "${TRAIN[@]}" "${BASE[@]}" "${SERVE[@]}" ;;
  whisper) download "$DEST" "${BASE[@]}" ;;
  all) download "$DEST" "${TRAIN[@]}" "${BASE[@]}" "${SERVE[@]}" ;;
esac
if [ "$BUNDLE" != train ]; then
  whisper_tarball
  random_whisper
fi
speech

bundle=$(du -sb "$DEST" | cut -f1)
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')
total=$((bundle + tree))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "bundle $BUNDLE in $DEST: $(mib "$bundle") ($(ls "$DEST"/*.whl | wc -l) wheels$([ -f "$DEST/whisper.tar.xz" ] && echo ", whisper.tar.xz $(mib "$(stat -c %s "$DEST/whisper.tar.xz")")"))"
echo "with the working tree ($(mib "$tree")): $(mib "$total") of the 64 MiB a run carries"
if [ "$total" -gt "$LIMIT" ]; then
  echo "gpu_bundle.sh: over 64 MiB: build --bundle train and --bundle whisper for two runs" >&2
  exit 1
fi
