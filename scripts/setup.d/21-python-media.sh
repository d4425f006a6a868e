#!/usr/bin/env bash
# The media tools the tests need: espeak-ng speaks the test sentences (real voices for the VAD,
# decoder and half-duplex tests) and ffmpeg/ffprobe encode them to MP3/FLAC/OGG/M4A and check the
# replay videos the worker makes. The worker image carries ffmpeg already (Dockerfile.worker).
set -euo pipefail
if command -v espeak-ng >/dev/null && command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt_get() { apt-get -o DPkg::Lock::Timeout=600 "$@"; }
if ! apt-cache show espeak-ng >/dev/null 2>&1; then
  apt_get update -qq
fi
apt_get install -y -qq --no-install-recommends espeak-ng ffmpeg >/dev/null
