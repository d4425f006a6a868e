"""The locally built images (scripts/images/build.sh, same Dockerfiles as the GPU images) are what
the Dockerfiles promise: non-root, read-only-root friendly, both entrypoints in the gateway image,
FFmpeg, a healthy simulated worker and a Silero VAD that hears speech (no torch) in the worker
image, and no pip left behind."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

from tests.fixtures.speech import speak

pytestmark = [pytest.mark.cluster, pytest.mark.node]


def docker(images, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["docker", *args], env={**os.environ, "DOCKER_HOST": images.docker_host},
                          capture_output=True, text=True, timeout=180)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def run(images, image: str, script: str, *flags: str) -> str:
    return docker(images, "run", "--rm", "--network", "none", *flags, image, "sh", "-c", script).stdout


def test_both_images_run_as_uid_10001_by_default(omnikube_images):
    for image in omnikube_images.names:
        config = json.loads(docker(omnikube_images, "image", "inspect", image).stdout)[0]["Config"]
        assert config["User"] == "10001:10001", image
        assert run(omnikube_images, image, "id -u").strip() == "10001"


def test_the_gateway_image_serves_both_entrypoints_on_a_read_only_root(omnikube_images):
    out = run(omnikube_images, "omnikube/gateway:dev",
              "omnikube-gateway --help >/dev/null && omnikube-operator --help >/dev/null && echo both",
              "--read-only", "--tmpfs", "/tmp")
    assert out.strip() == "both"


def test_no_pip_and_no_wheelhouse_stay_in_the_images(omnikube_images):
    for image in omnikube_images.names:
        out = run(omnikube_images, image, "ls /opt/omnikube/bin/pip /wheelhouse /tmp/wheelhouse 2>&1; true")
        assert out.count("No such file") == 3, (image, out)


def test_the_worker_image_has_ffmpeg_and_its_simulated_worker_gets_healthy(omnikube_images):
    script = (
        "ffmpeg -version | head -1; "
        "omnikube-worker --backend simulated --host 127.0.0.1 --port 22400 >/tmp/worker.log 2>&1 & "
        # /readyz answers 200 only once the (simulated) model is loaded; /health answers from the start.
        "for i in $(seq 1 300); do "
        "python3 -c 'import urllib.request as u; u.urlopen(\"http://127.0.0.1:22400/readyz\"); "
        "print(u.urlopen(\"http://127.0.0.1:22400/health\").read().decode())' "
        "2>/dev/null && exit 0; sleep 0.2; done; cat /tmp/worker.log; exit 1"
    )
    lines = run(omnikube_images, "omnikube/worker:dev", script).splitlines()
    assert lines[0].startswith("ffmpeg version")
    health = json.loads(lines[-1])
    assert health["worker_status"] == "idle" and health["simulated"] is True


def test_the_worker_image_hears_spoken_words_with_silero_vad_and_no_torch(omnikube_images, tmp_path):
    audio = np.concatenate([np.zeros(8000), speak("Good morning, how are you?"), np.zeros(16000)]).astype("<f4")
    (tmp_path / "speech.f32").write_bytes(audio.tobytes())
    (tmp_path / "speech.f32").chmod(0o644)
    script = ("python3 -c 'import importlib.util as u, numpy as np; from omnikube_worker.vad import SileroVad; "
              "print(u.find_spec(\"torch\") is None, [e.kind for e in SileroVad().feed(np.fromfile(\"/in.f32\", \"<f4\"))])'")
    out = run(omnikube_images, "omnikube/worker:dev", script, "-v", f"{tmp_path / 'speech.f32'}:/in.f32:ro")
    assert out.strip() == "True ['start', 'segment']", out
