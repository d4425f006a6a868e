"""Checks the schema cannot express: they need the cluster (Secrets, StorageClasses, claims) or
relate two fields. A spec that fails any of them is reported Degraded and applied not at all.

A problem is *permanent* when only an edit of the spec can fix it (kopf does not retry it), and
temporary when the cluster may fix it by itself (a Secret or claim created later: retried).
"""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes.client.exceptions import ApiException

from omnikube.spec import ModelCacheSource, SecretKeyRef

from .context import Owner
from .kube import Kube


@dataclass(frozen=True)
class Problem:
    reason: str
    message: str
    permanent: bool = False


def _secret(kube: Kube, owner: Owner, ref: SecretKeyRef, field: str) -> Problem | None:
    try:
        secret = kube.get("v1", "Secret", owner.namespace, ref.name)
    except ApiException as exc:
        if exc.status == 403:  # least privilege: the chart grants only the Secrets it was told of
            return None     # the pod then waits for the Secret, and its status says so
        raise
    if secret is None:
        return Problem("SecretNotFound", f"{field}: Secret {ref.name!r} not found in namespace {owner.namespace}; create it or fix the name")
    if ref.key not in (secret.get("data") or {}) and ref.key not in (secret.get("stringData") or {}):
        return Problem("SecretKeyNotFound", f"{field}: Secret {ref.name!r} has no key {ref.key!r}")
    return None


def _storage_class(kube: Kube, name: str | None, field: str) -> Problem | None:
    if not name or kube.get("storage.k8s.io/v1", "StorageClass", None, name) is not None:
        return None
    known = sorted(sc["metadata"]["name"] for sc in kube.list("storage.k8s.io/v1", "StorageClass", None))
    return Problem("StorageClassNotFound",
                   f"{field}: StorageClass {name!r} does not exist (available: {', '.join(known) or 'none'})")


def _claim(kube: Kube, owner: Owner, name: str, field: str) -> Problem | None:
    if kube.get("v1", "PersistentVolumeClaim", owner.namespace, name) is not None:
        return None
    return Problem("ClaimNotFound", f"{field}: PersistentVolumeClaim {name!r} not found in namespace {owner.namespace}")


def _autoscaling(owner: Owner) -> list[Problem]:
    workers = owner.spec.workers
    scaling = workers.autoscaling
    if not scaling.enabled:
        return []
    if scaling.min_replicas > scaling.max_replicas:
        return [Problem("InvalidSpec", f"spec.workers.autoscaling.minReplicas={scaling.min_replicas} exceeds "
                        f"maxReplicas={scaling.max_replicas}", True)]
    if scaling.max_replicas > workers.max_replicas:
        return [Problem("ReplicasAboveCap", f"spec.workers.autoscaling.maxReplicas={scaling.max_replicas} exceeds "
                        f"spec.workers.maxReplicas={workers.max_replicas}; lower it or raise the cap", True)]
    return []


def check(kube: Kube, owner: Owner) -> list[Problem]:
    """Every problem found (empty: the spec can be honoured)."""
    spec = owner.spec
    workers, cache, storage, source = spec.workers, spec.model_cache, spec.storage, owner.model_source
    problems: list[Problem | None] = []
    if workers.replicas > workers.max_replicas and not workers.autoscaling.enabled:  # else the autoscaler's bounds win
        problems.append(Problem("ReplicasAboveCap", f"spec.workers.replicas={workers.replicas} exceeds "
                                f"spec.workers.maxReplicas={workers.max_replicas}; lower replicas or raise the cap", True))
    problems += _autoscaling(owner)
    if source == ModelCacheSource.pvc.value and cache.pvc is None:
        problems.append(Problem("InvalidSpec", "spec.modelCache.source is pvc but spec.modelCache.pvc.claimName is not set", True))
    if source == ModelCacheSource.hostPath.value and cache.host_path is None:
        problems.append(Problem("InvalidSpec", "spec.modelCache.source is hostPath but spec.modelCache.hostPath.path is not set", True))
    if spec.auth.api_key_secret:
        problems.append(_secret(kube, owner, spec.auth.api_key_secret, "spec.auth.apiKeySecret"))
    if source == ModelCacheSource.download.value:
        if cache.download.token_secret:
            problems.append(_secret(kube, owner, cache.download.token_secret, "spec.modelCache.download.tokenSecret"))
        problems.append(_storage_class(kube, cache.download.storage_class_name, "spec.modelCache.download.storageClassName"))
    if source == ModelCacheSource.pvc.value and cache.pvc:
        problems.append(_claim(kube, owner, cache.pvc.claim_name, "spec.modelCache.pvc.claimName"))
    if storage.enabled and storage.existing_claim:
        problems.append(_claim(kube, owner, storage.existing_claim, "spec.storage.existingClaim"))
    elif storage.enabled:
        problems.append(_storage_class(kube, storage.storage_class_name, "spec.storage.storageClassName"))
    return [p for p in problems if p is not None]
