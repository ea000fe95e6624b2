#!/usr/bin/env bash
# Installs the Debian packages xttsft needs (ffmpeg; espeak-ng for tests and the
# demo voice; chromium for the serve page's browser test) when they are missing.
# Needs root for apt-get; otherwise it says what to install and fails.
set -euo pipefail
missing=()
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
# chromium: the serve page's browser test (Playwright drives Debian's build; its own download is unreachable)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "xttsft needs: ${missing[*]}. Install them with your package manager," >&2
  echo "for example: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "Installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
