"""The data volume on the real node: with `storage.enabled` (a ReadWriteMany PVC) the gateway and the
workers share one directory, so a worker's session recording is listed by the gateway's
/api/sessions and an uploaded reference voice outlives the gateway pod. The local cluster has no
storage provisioner, so the test binds the OmniDeployment's own PVC to a static hostPath
PersistentVolume on the node (this machine), made to match what the PVC asks for."""

from __future__ import annotations

import base64
import io
import math
import os
import shutil
import struct
import wave
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.omnideployment import eventually
from tests.operator.test_gateway_ha_node import create_simulated, gateway_pods, ready_endpoints

pytestmark = [pytest.mark.cluster, pytest.mark.node]

IMAGE_UID = 10001  # the images' user and group (Dockerfile.*; the operator's fsGroup)


def tone_wav(seconds: float = 1.0, rate: int = 16000) -> bytes:
    frames = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 220 * i / rate))) for i in range(int(seconds * rate)))
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return out.getvalue()


class StaticVolumes:
    """hostPath PersistentVolumes pre-bound to one claim each; removed (object and directory) at teardown."""

    def __init__(self, cluster, root: Path) -> None:
        self.cluster, self.root, self.names = cluster, root, []

    def bind(self, omni, claim_name: str) -> Path:
        """A PV matching the claim's size, access modes and storage class, bound to it; returns its directory."""
        claim = eventually(lambda: omni.child("v1", "PersistentVolumeClaim", claim_name), 60, f"PVC {claim_name}")
        spec = claim["spec"]
        name = f"{omni.namespace}-{claim_name}"[:63]
        directory = self.root / name
        directory.mkdir(parents=True)
        # What fsGroup does for volumes that support it (hostPath does not): group-writable for the pods' group.
        os.chown(directory, 0, IMAGE_UID)
        directory.chmod(0o2775)
        self.names.append(name)
        self.cluster.apply_manifest({
            "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
            "spec": {
                "capacity": {"storage": spec["resources"]["requests"]["storage"]},
                "accessModes": spec["accessModes"],
                "storageClassName": spec.get("storageClassName") or "",
                "persistentVolumeReclaimPolicy": "Retain",
                "claimRef": {"namespace": omni.namespace, "name": claim_name},
                "hostPath": {"path": str(directory), "type": "Directory"},
            },
        })
        eventually(lambda: (omni.child("v1", "PersistentVolumeClaim", claim_name) or {}).get("status", {}).get("phase") == "Bound",
                   60, f"PVC {claim_name} bound to {name}")
        return directory

    def remove(self) -> None:
        for name in self.names:
            self.cluster.kubectl("delete", "pv", name, "--wait=false", "--ignore-not-found", check=False)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def static_volumes(k8s_node, tmp_path_factory) -> Iterator[StaticVolumes]:
    volumes = StaticVolumes(k8s_node, tmp_path_factory.mktemp("pv"))
    yield volumes
    volumes.remove()


def test_recordings_and_voices_live_on_the_shared_volume(omni, start_operator, omnikube_images, static_volumes):
    name = create_simulated(omni, start_operator, storage={"enabled": True, "size": "1Gi"})
    directory = static_volumes.bind(omni, f"{name}-data")
    omni.wait_condition(name, "Ready", "True", timeout=240)
    eventually(lambda: len(ready_endpoints(omni, name)) == 1, 60, "the gateway in its Service")
    service = omni.child("v1", "Service", f"{name}-gateway")
    base = f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"

    with httpx.Client(base_url=base, timeout=30) as client:
        # A session the worker records, run through the gateway: the gateway lists it from the shared volume.
        reply = client.post("/api/chat", json={"messages": [{"role": "user", "content": "Hello there"}]})
        assert reply.status_code == 200, reply.text
        session_id = reply.json()["recording_session_id"]
        listed = client.get("/api/sessions").json()
        assert session_id in [s["session_id"] for s in listed["sessions"]], listed
        assert (directory / "sessions" / session_id / "recording.json").exists()  # on the PV, not in a pod

        voice = client.post("/api/assets/ref_audio", json={"name": "kept", "audio_base64": base64.b64encode(tone_wav()).decode()})
        assert voice.status_code == 200, voice.text
        voice_id = voice.json()["id"]

    victim = gateway_pods(omni, name)[0]
    omni.cluster.kubectl("delete", "pod", "-n", omni.namespace, victim, "--wait=false")
    eventually(lambda: ready_endpoints(omni, name) and victim not in ready_endpoints(omni, name), 120,
               "the replacement gateway in the Service")
    with httpx.Client(base_url=base, timeout=30) as client:
        voices = eventually(lambda: client.get("/api/assets/ref_audio").json(), 30, "the voice list from the new gateway")
        assert voice_id in [v["id"] for v in voices["ref_audios"]], voices
        assert session_id in [s["session_id"] for s in client.get("/api/sessions").json()["sessions"]]
