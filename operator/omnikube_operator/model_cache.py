"""Model weights for the workers: a cache PVC filled once by a download Job, a user's PVC, or a
host directory, always mounted read-only at /models.

The download Job's name carries a hash of what it downloads, so changing the repository starts a
new Job (Jobs are immutable) and the old one is removed. Workers are created only once the Job has
succeeded; `job_state` turns the Job's status into something status conditions can say.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omnikube import labels
from omnikube.spec import MODEL_MOUNT_PATH, DownloadHub, ModelCacheSource

from .context import COMPONENT_MODEL_CACHE, Owner, short_hash
from .lockdown import lock_down
from .storage import build_claim

MODEL_VOLUME = "model"
COMPLETE_MARKER = ".omnikube-complete"

# Runs in the worker image, which carries huggingface_hub (a transformers dependency).
_HF_DOWNLOAD = (
    "import os, pathlib\n"
    "from huggingface_hub import snapshot_download\n"
    "repo = os.environ['OMNIKUBE_REPO']\n"
    "snapshot_download(repo_id=repo, revision=os.environ.get('OMNIKUBE_REVISION') or None, local_dir='{dir}')\n"
    "pathlib.Path('{dir}/{marker}').write_text(repo)\n"
).format(dir=MODEL_MOUNT_PATH, marker=COMPLETE_MARKER)
_MODELSCOPE_DOWNLOAD = (
    f'modelscope download --model "$OMNIKUBE_REPO" --local_dir {MODEL_MOUNT_PATH}'
    f' && echo "$OMNIKUBE_REPO" > {MODEL_MOUNT_PATH}/{COMPLETE_MARKER}'
)


def repo_id(owner: Owner) -> str:
    return owner.spec.model_cache.download.repo_id or owner.spec.model.model_path


def download_job_name(owner: Owner) -> str:
    download = owner.spec.model_cache.download
    return f"{owner.name}-model-download-{short_hash([repo_id(owner), download.hub, download.revision, download.endpoint], 6)}"


def build_cache_claim(owner: Owner) -> dict[str, Any] | None:
    if owner.model_source != ModelCacheSource.download.value:
        return None
    download = owner.spec.model_cache.download
    return build_claim(owner, owner.model_claim, COMPONENT_MODEL_CACHE, download.size, download.access_mode,
                       download.storage_class_name)


def build_download_job(owner: Owner) -> dict[str, Any] | None:
    if owner.model_source != ModelCacheSource.download.value:
        return None
    download = owner.spec.model_cache.download
    env = [{"name": "OMNIKUBE_REPO", "value": repo_id(owner)}, {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"}]
    if download.revision:
        env.append({"name": "OMNIKUBE_REVISION", "value": download.revision})
    if download.endpoint:
        env.append({"name": "HF_ENDPOINT", "value": download.endpoint})
    if download.token_secret:
        ref = {"secretKeyRef": {"name": download.token_secret.name, "key": download.token_secret.key}}
        env.append({"name": "HF_TOKEN", "valueFrom": ref})
        env.append({"name": "MODELSCOPE_API_TOKEN", "valueFrom": ref})
    if download.hub == DownloadHub.modelscope.value:
        command = ["sh", "-c", _MODELSCOPE_DOWNLOAD]
    else:
        command = ["python", "-c", _HF_DOWNLOAD]
    pod_labels = owner.labels(labels.COMPONENT_MODEL_DOWNLOAD)
    return owner.adopt({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": owner.metadata(download_job_name(owner), labels.COMPONENT_MODEL_DOWNLOAD),
        "spec": {
            "backoffLimit": download.backoff_limit,
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": lock_down({
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "download",
                        "image": download.image or owner.spec.workers.image,
                        "imagePullPolicy": owner.spec.workers.image_pull_policy,
                        "command": command,
                        "env": env,
                        "volumeMounts": [{"name": MODEL_VOLUME, "mountPath": MODEL_MOUNT_PATH}],
                    }],
                    "volumes": [{"name": MODEL_VOLUME, "persistentVolumeClaim": {"claimName": owner.model_claim}}],
                    "nodeSelector": owner.spec.workers.node_selector,
                    "tolerations": [t.model_dump(by_alias=True, exclude_none=True) for t in owner.spec.workers.tolerations],
                }),
            },
        },
    })


def model_volume(owner: Owner) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(volume, read-only mount) for the worker container, or None when workers load by themselves."""
    cache, source = owner.spec.model_cache, owner.model_source
    mount: dict[str, Any] = {"name": MODEL_VOLUME, "mountPath": MODEL_MOUNT_PATH, "readOnly": True}
    if source == ModelCacheSource.download.value:
        volume = {"name": MODEL_VOLUME, "persistentVolumeClaim": {"claimName": owner.model_claim, "readOnly": True}}
    elif source == ModelCacheSource.pvc.value and cache.pvc:
        volume = {"name": MODEL_VOLUME, "persistentVolumeClaim": {"claimName": cache.pvc.claim_name, "readOnly": True}}
        if cache.pvc.sub_path:
            mount["subPath"] = cache.pvc.sub_path
    elif source == ModelCacheSource.hostPath.value and cache.host_path:
        volume = {"name": MODEL_VOLUME, "hostPath": {"path": cache.host_path.path, "type": "Directory"}}
    else:
        return None
    return volume, mount


@dataclass(frozen=True)
class JobState:
    done: bool
    failed: bool
    message: str


def job_state(job: dict[str, Any] | None) -> JobState:
    """What the download Job says: done, failed (with the Job's reason), or still running."""
    if job is None:
        return JobState(False, False, "download Job not created yet")
    status = job.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return JobState(True, False, "weights downloaded")
        if condition.get("type") == "Failed":
            detail = condition.get("message") or condition.get("reason") or "failed"
            return JobState(False, True, f"download Job {job['metadata']['name']} failed: {detail}")
    if status.get("succeeded"):
        return JobState(True, False, "weights downloaded")
    attempts = status.get("failed") or 0
    return JobState(False, False, f"downloading the weights (Job {job['metadata']['name']}, {attempts} failed attempts so far)")
