#!/usr/bin/env bash
# Make the wheelhouse the Dockerfiles install from (`pip install --no-index`): pip inside
# `docker build` has no registry access here, so every wheel is fetched on the host first.
#
#   scripts/images/wheelhouse.sh [--extras worker|vad] [--python-version 3.10] [--out DIR]
#
# Defaults: no extras, the host's Python version (3.11, as Debian bookworm's python3), out
# build/wheelhouse/py<ver>[-<extras>]. The third-party wheels are cached under $IMAGES_CACHE keyed
# by the runtime requirements, extras and Python version, so a rebuild only rebuilds the omnikube
# wheel. The output holds exactly the wheels an image installs: deps/ (third-party, changes rarely:
# its image layer stays cached) and project/ (omnikube), plus requirements.lock naming them all.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

extras=""
pyver=$("$VENV_PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
host_pyver=$pyver
out=""
while [ $# -gt 0 ]; do
  case $1 in
    --extras) extras=$2; shift ;;
    --python-version) pyver=$2; shift ;;
    --out) out=$2; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) idie "unknown argument: $1" ;;
  esac
  shift
done
[ -n "$out" ] || out="$WHEELHOUSE/py${pyver/./}${extras:+-${extras//,/-}}"

# The runtime requirements (no test extra): the key of the third-party cache.
requirements=$("$VENV_PYTHON" - "$IMAGES_REPO_ROOT/pyproject.toml" "$extras" <<'PY'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
reqs = list(project["dependencies"])
for extra in filter(None, sys.argv[2].split(",")):
    reqs += project["optional-dependencies"][extra]
print("\n".join(reqs))
PY
)
key=$(printf '%s|%s' "$requirements" "$pyver" | sha256sum | cut -c1-12)
deps="$IMAGES_CACHE/wheels/$key"
pip=("$VENV_PYTHON" -m pip --disable-pip-version-check)

if [ ! -f "$deps/.complete" ]; then
  ilog "fetching third-party wheels for Python $pyver${extras:+ with [$extras]} into $deps"
  rm -rf "$deps" && mkdir -p "$deps"
  printf '%s\n' "$requirements" >"$deps/requirements.in"
  if [ "$pyver" = "$host_pyver" ]; then
    # Same interpreter version as the image: sdists are built into wheels here.
    "${pip[@]}" wheel --quiet --wheel-dir "$deps" -r "$deps/requirements.in"
  else
    # Another interpreter (e.g. Python 3.10 on a CUDA base): binary wheels only, for that target.
    "${pip[@]}" download --quiet --dest "$deps" --only-binary=:all: --implementation cp \
      --python-version "$pyver" --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
      -r "$deps/requirements.in"
  fi
  case ",$extras," in
    # silero-vad requires torch to install, but only its ONNX model file is used (on onnxruntime):
    # the wheel alone, so that the CPU image's VAD costs no torch. Pure Python, any interpreter.
    *,vad,*) "${pip[@]}" download --quiet --no-deps --only-binary=:all: --dest "$deps" "silero-vad>=6.2" ;;
  esac
  touch "$deps/.complete"
fi

ilog "building the omnikube wheel"
rm -rf "$out" && mkdir -p "$out/deps" "$out/project"
# A fixed timestamp makes the wheel a function of the sources alone, so unchanged sources hit the
# image layer cache.
# A cached build environment (setuptools + wheel) saves pip's per-build isolated install.
build_venv="$IMAGES_CACHE/build-venv"
if [ ! -f "$build_venv/.complete" ]; then
  rm -rf "$build_venv"
  python3 -m venv "$build_venv"
  "$build_venv/bin/pip" install --quiet --disable-pip-version-check 'setuptools>=68' wheel
  touch "$build_venv/.complete"
fi
if ! SOURCE_DATE_EPOCH=315532800 "$build_venv/bin/pip" wheel --quiet --disable-pip-version-check --no-build-isolation \
    --no-deps --wheel-dir "$out/project" "$IMAGES_REPO_ROOT" >"$out/build.log" 2>&1; then
  cat "$out/build.log" >&2
  idie "building the omnikube wheel failed"
fi
rm -f "$out/build.log"
rm -rf "$IMAGES_REPO_ROOT/build/lib" "$IMAGES_REPO_ROOT/build/bdist."*
# Hard links: the cache and the wheelhouse share one copy on disk.
cp -l "$deps"/*.whl "$out/deps/" 2>/dev/null || cp "$deps"/*.whl "$out/deps/"
(cd "$out" && ls deps/*.whl project/*.whl | sort >requirements.lock)
ilog "wheelhouse ready: $out ($(wc -l <"$out/requirements.lock") wheels, $(du -sh "$out" | cut -f1))"
echo "$out"
