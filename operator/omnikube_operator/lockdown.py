"""What every pod the operator builds runs under: the Kubernetes "restricted" Pod Security Standard.

The container cannot write its image (read-only root filesystem), gain privileges (no setuid, no
capabilities) or make system calls outside the runtime's default seccomp profile. What a process
does need to write lives on volumes: `/tmp` and the cache directory (Hugging Face, XDG caches,
torch/triton compile caches) as emptyDirs here; data and weights as the builders mount them.
"""

from __future__ import annotations

from typing import Any

# The images run as uid/gid 10001; fsGroup makes the data and cache volumes writable for it.
POD_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
TMP_VOLUME = "tmp"
CACHE_VOLUME = "cache"
CACHE_DIR = "/var/cache/omnikube"  # the worker image's HF_HOME parent; the gateway image has none of its own
# Libraries that cache under $HOME (read-only here) are pointed at the cache volume instead.
CACHE_ENV = [
    {"name": "XDG_CACHE_HOME", "value": CACHE_DIR},
    {"name": "HF_HOME", "value": f"{CACHE_DIR}/huggingface"},
    {"name": "TRITON_CACHE_DIR", "value": f"{CACHE_DIR}/triton"},
    {"name": "TORCHINDUCTOR_CACHE_DIR", "value": f"{CACHE_DIR}/torchinductor"},
    {"name": "MPLCONFIGDIR", "value": f"{CACHE_DIR}/matplotlib"},
]


def writable_volumes(tmp_limit: str = "1Gi", cache_limit: str | None = None) -> list[dict[str, Any]]:
    cache: dict[str, Any] = {"sizeLimit": cache_limit} if cache_limit else {}
    return [{"name": TMP_VOLUME, "emptyDir": {"sizeLimit": tmp_limit}}, {"name": CACHE_VOLUME, "emptyDir": cache}]


WRITABLE_MOUNTS = [{"name": TMP_VOLUME, "mountPath": "/tmp"}, {"name": CACHE_VOLUME, "mountPath": CACHE_DIR}]


def lock_down(pod_spec: dict[str, Any], *, tmp_limit: str = "1Gi", cache_limit: str | None = None) -> dict[str, Any]:
    """Give `pod_spec` (every container in it) the restricted security settings and its writable
    volumes; returns the same dict."""
    pod_spec["securityContext"] = dict(POD_SECURITY_CONTEXT)
    pod_spec["automountServiceAccountToken"] = bool(pod_spec.get("serviceAccountName"))
    pod_spec["volumes"] = [*pod_spec.get("volumes", []), *writable_volumes(tmp_limit, cache_limit)]
    for container in pod_spec["containers"]:
        container["securityContext"] = dict(CONTAINER_SECURITY_CONTEXT)
        mounted = {m["mountPath"] for m in container.get("volumeMounts", [])}
        container["volumeMounts"] = [*container.get("volumeMounts", []),
                                     *(m for m in WRITABLE_MOUNTS if m["mountPath"] not in mounted)]
        names = {e["name"] for e in container.get("env", [])}
        container["env"] = [*container.get("env", []), *(e for e in CACHE_ENV if e["name"] not in names)]
    return pod_spec
