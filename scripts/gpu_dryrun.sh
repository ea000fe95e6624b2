#!/usr/bin/env bash
# make gpu-dryrun: the lent GPU machine's Python rehearsed here, so a missing wheel costs no GPU time.
#
# 1. A Python 3.12 virtualenv (outside the repo) with the image's versions of what the check imports
#    (torch 2.11.0, transformers 5.17.0, ...; docs/gpu-check.md), then everything the image does not
#    have is uninstalled again: only the image's package names stay.
# 2. The bundle (scripts/gpu_bundle.sh, built when .whl/ is missing) installed with the very line
#    docs/gpu-check.md gives for the lent machine: pip --no-index --no-deps --target, then the
#    Whisper tarball.
# 3. Importing what training uses must not load av or ctranslate2.
# 4. scripts/gpu_check.py --cpu: the CPU plan and one CPU row of each step, with espeak-ng, ffmpeg
#    and nvidia-smi off the PATH as on the lent machine (the carried audio stands in).
# Fails when a step of the rehearsal fails. Needs a network for step 1 the first time (about 3 GB:
# torch 2.11 from PyPI is a CUDA build; it runs on the CPU). Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."

find_py312() {  # PY312, pyenv's 3.12, or python3.12 on the PATH: the first that really is 3.12
  local c
  for c in ${PY312:-} "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12.*/bin/python3.12 $(command -v python3.12 || true); do
    if [ -x "$c" ] && "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
      echo "$c"
      return
    fi
  done
}
VENV=${GPU_DRYRUN_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/xttsft/gpu-dryrun-py312}
OUTDIR=${GPU_DRYRUN_OUT:-$(mktemp -d /tmp/gpu-dryrun-out.XXXXXX)}
# The image's versions where KINDS.md gives them, else recent ones (typer 0.28: 0.29 needs pydantic,
# which the image lacks).
PINS=(torch==2.11.0 torchaudio==2.11.0 transformers==5.17.0 tokenizers==0.23.2 huggingface-hub==1.33.0
      safetensors==0.8.0 accelerate==1.15.0 numpy==2.5.2 onnxruntime==1.30.0 triton==3.6.0 typer==0.28.0
      peft rich scipy scikit-learn numba joblib lazy-loader msgpack psutil filelock fsspec pyyaml regex tqdm
      packaging requests six einops pytest pytest-timeout matplotlib tensorboard prometheus-client)
# The image's package list (KINDS.md, read 2026-11-17): nothing else may stay in the venv.
IMAGE="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin
jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax
llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack
multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft
nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py
nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec
patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools
shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server
tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric
torchmetrics torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3
uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp"

say() { echo "gpu-dryrun: $*"; }
pip_() {  # pip, without this machine's notes about local index folders it skips
  "$VENV/bin/python" -m pip "$@" --disable-pip-version-check 2>&1 | { grep -v 'is ignored: it is neither a file' || true; }
  return "${PIPESTATUS[0]}"
}

image_venv() {
  local stamp="$VENV/.xttsft-pins"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${PINS[*]}" ]; then return; fi
  local py
  py=$(find_py312)
  [ -n "$py" ] || { echo "gpu-dryrun: no python3.12 (pyenv install 3.12, or PY312=/path/to/python3.12)" >&2; exit 1; }
  say "building $VENV with the image's versions (first time: a few minutes, ~3 GB)"
  rm -rf "$VENV"
  "$py" -m venv "$VENV"
  pip_ install -q "${PINS[@]}"
  local extra
  extra=$("$VENV/bin/python" -m pip list --format=freeze --disable-pip-version-check 2>/dev/null | cut -d= -f1 \
          | tr 'A-Z_.' 'a-z--' | while read -r n; do [[ " $(echo $IMAGE) " == *" $n "* ]] || echo "$n"; done)
  if [ -n "$extra" ]; then
    say "not in the image, uninstalled: $(echo $extra)"
    pip_ uninstall -q -y $extra
  fi
  echo "${PINS[*]}" > "$stamp"
}

no_tools_path() {  # a PATH like this one without espeak-ng, ffmpeg, ffprobe and nvidia-smi
  local bin="$OUTDIR/bin" d f
  mkdir -p "$bin"
  IFS=: read -ra dirs <<< "$PATH"
  for d in "${dirs[@]}"; do
    [ -d "$d" ] || continue
    for f in "$d"/*; do
      case "${f##*/}" in espeak-ng|espeak|ffmpeg|ffprobe|nvidia-smi) continue ;; esac
      [ -e "$bin/${f##*/}" ] || ln -s "$f" "$bin/${f##*/}"
    done
  done
  echo "$bin"
}

image_venv
[ -f .whl/whisper.tar.xz ] || bash scripts/gpu_bundle.sh
SITE="$OUTDIR/site"
say "installing the bundle into $SITE as on the lent machine"
pip_ install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
tar -xJf .whl/whisper.tar.xz -C "$SITE"
export PYTHONPATH="$SITE"

say "training imports: av and ctranslate2 must not load"
"$VENV/bin/python" scripts/gpu_check.py --check-imports

say "scripts/gpu_check.py --cpu, with espeak-ng, ffmpeg and nvidia-smi off the PATH; output in $OUTDIR"
NOPATH=$(no_tools_path)
rc=0
env -u OUT PATH="$NOPATH" "$VENV/bin/python" scripts/gpu_check.py --cpu --deadline "${GPU_DRYRUN_DEADLINE:-1500}" \
  --out "$OUTDIR" || rc=$?
"$VENV/bin/python" - "$OUTDIR/gpu_check.json" "$rc" <<'EOF'
import json, sys

report, rc = json.load(open(sys.argv[1])), int(sys.argv[2])
bad = [s for s in report["steps"] if s["status"] != "ok"]
rows = report["rows"]
print(f"gpu-dryrun: {len(report['steps'])} steps, {len(rows)} rows "
      f"({sum(r.get('status') == 'ok' for r in rows)} measured), gpu_check exit {rc}")
for s in bad:
    print(f"gpu-dryrun: step {s['step']} failed: {s['status']}")
sys.exit(1 if bad or rc else 0)
EOF
