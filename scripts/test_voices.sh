#!/usr/bin/env bash
# The real voices of the speaker-turn corpus test (tests/test_conversation.py) and of
# benchmarks/purity.py: the 30 s two-speaker telephone conversation that ships in the
# pyannote.audio wheel (0.9 MB, MIT; pyannote/audio/sample/sample.wav + sample.rttm), unpacked
# into tests/.voices/ (git-ignored). Does nothing when they are there already.
# Exit status 3: the package registry could not be reached (the test then skips and says so).
set -euo pipefail
PY=${PY:-.venv/bin/python}
DEST=${1:-tests/.voices}
WHEEL=pyannote_audio-4.0.7-py3-none-any.whl
if [ -f "$DEST/pyannote_sample.wav" ] && [ -f "$DEST/pyannote_sample.rttm" ]; then
  exit 0
fi
"$PY" -c "import pip" || { echo "test voices: $PY cannot run pip (set PY to the project's Python)" >&2; exit 1; }
mkdir -p "$DEST"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! "$PY" -m pip download --disable-pip-version-check -q --no-deps pyannote.audio==4.0.7 -d "$tmp" >"$tmp/log" 2>&1; then
  cat "$tmp/log" >&2
  echo "test voices: pip could not download pyannote.audio==4.0.7 (no network or no package index?)" >&2
  exit 3
fi
"$PY" - "$tmp/$WHEEL" "$DEST" <<'PYEOF'
import sys, zipfile
from pathlib import Path

wheel, dest = sys.argv[1], Path(sys.argv[2])
with zipfile.ZipFile(wheel) as z:
    for name, out in (("sample.wav", "pyannote_sample.wav"), ("sample.rttm", "pyannote_sample.rttm")):
        data = z.read(f"pyannote/audio/sample/{name}")
        tmp = dest / f".{out}.part"
        tmp.write_bytes(data)
        tmp.replace(dest / out)
print(f"test voices: {dest}/pyannote_sample.wav (the pyannote.audio 4.0.7 sample)")
PYEOF
