# Shared settings for the image scripts: names, tags, cache locations. Sourced, never run.
# Every value can be overridden from the environment.
IMAGES_REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OMNIKUBE_CACHE=${OMNIKUBE_CACHE:-$HOME/.cache/omnikube}
IMAGES_CACHE=${IMAGES_CACHE:-$OMNIKUBE_CACHE/images}

DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Two local bases, both made with debootstrap (public base images cannot be pulled here): the
# slim one carries Python for the gateway/operator image, the media one adds FFmpeg for the worker.
BASE_PACKAGES=${BASE_PACKAGES:-python3,python3-venv}
MEDIA_PACKAGES=${MEDIA_PACKAGES:-ffmpeg}
BASE_IMAGE_LOCAL=${BASE_IMAGE_LOCAL:-omnikube/base:$DEBIAN_SUITE}
MEDIA_IMAGE_LOCAL=${MEDIA_IMAGE_LOCAL:-omnikube/base-media:$DEBIAN_SUITE}

# The tag the local samples use (manifests/samples/simulated.yaml, imagePullPolicy Never).
IMAGE_TAG=${IMAGE_TAG:-dev}
GATEWAY_IMAGE=${GATEWAY_IMAGE:-omnikube/gateway:$IMAGE_TAG}
WORKER_IMAGE=${WORKER_IMAGE:-omnikube/worker:$IMAGE_TAG}

WHEELHOUSE=${WHEELHOUSE:-$IMAGES_REPO_ROOT/build/wheelhouse}
VENV_PYTHON=${VENV_PYTHON:-$IMAGES_REPO_ROOT/.venv/bin/python}

ilog() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
idie() { ilog "error: $*"; exit 1; }

# Content key of the base rootfs: changes when the suite or the package lists change.
base_key() { printf '%s|%s|%s|%s' "$DEBIAN_SUITE" "$DEBIAN_MIRROR" "$BASE_PACKAGES" "$MEDIA_PACKAGES" | sha256sum | cut -c1-12; }
