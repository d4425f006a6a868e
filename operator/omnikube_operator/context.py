"""One OmniDeployment as the builders see it: parsed spec, identity, and the names of its children.

Builders are pure functions of an `Owner`; every child name is derived here, in one place, so a
restarted operator finds exactly the objects it made before.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import kopf

from omnikube import labels
from omnikube.spec import MODEL_MOUNT_PATH, BackendType, ModelCacheSource, OmniDeploymentSpec

CONFIG_DIR = "/etc/omnikube"
CONFIG_FILE = "config.json"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_FILE}"
DATA_MOUNT_PATH = "/var/lib/omnikube/data"
CONFIG_HASH = f"{labels.GROUP}/config-hash"
GATEWAY_METRICS_PATH = "/metrics"
# Components beyond the shared ones in `omnikube.labels` (nobody else selects these).
COMPONENT_CONFIG = "config"
COMPONENT_DATA = "data"
COMPONENT_MODEL_CACHE = "model-cache"


def short_hash(value: Any, length: int = 10) -> str:
    """Stable hash of JSON-able data (for template hashes and Job names)."""
    raw = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:length]


@dataclass(frozen=True)
class Owner:
    name: str
    namespace: str
    uid: str
    generation: int
    spec: OmniDeploymentSpec
    owner_labels: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> "Owner":
        """Parse an OmniDeployment; raises pydantic's ValidationError on a spec it cannot use."""
        meta = body["metadata"]
        return cls(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta["uid"],
            generation=int(meta.get("generation") or 0),
            spec=OmniDeploymentSpec.model_validate(body.get("spec") or {}),
            owner_labels=tuple(sorted((meta.get("labels") or {}).items())),
        )

    # --- names ---

    @property
    def config_map(self) -> str:
        return f"{self.name}-config"

    @property
    def gateway(self) -> str:
        return f"{self.name}-gateway"

    @property
    def workers_service(self) -> str:
        return f"{self.name}-workers"

    @property
    def data_claim(self) -> str:
        return self.spec.storage.existing_claim or f"{self.name}-data"

    @property
    def model_claim(self) -> str:
        return f"{self.name}-model-cache"

    def worker_pod(self, index: int) -> str:
        return f"{self.name}-worker-{index}"

    # --- shared pieces ---

    def labels(self, component: str) -> dict[str, str]:
        return labels.common_labels(self.name, component)

    def selector(self, component: str) -> dict[str, str]:
        return {labels.DEPLOYMENT: self.name, labels.COMPONENT: component}

    def metadata(self, name: str, component: str, **extra: Any) -> dict[str, Any]:
        """Name and the shared labels; `adopt` adds namespace and owner reference."""
        return {"name": name, "labels": self.labels(component), **extra}

    def adopt(self, child: dict[str, Any]) -> dict[str, Any]:
        """Make `child` ours: owner reference (so the garbage collector removes it with us), our
        namespace, and the OmniDeployment's own labels where the child has none of that key."""
        kopf.adopt(child, owner=self.body())
        return child

    def body(self) -> dict[str, Any]:
        return {
            "apiVersion": labels.API_VERSION,
            "kind": labels.KIND,
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid, "labels": dict(self.owner_labels)},
        }

    @property
    def model_source(self) -> str:
        """Where the weights come from; the simulated backend needs none, so it never downloads."""
        if self.spec.backend.type == BackendType.simulated.value:
            return ModelCacheSource.none.value
        return self.spec.model_cache.source

    @property
    def uses_model_cache(self) -> bool:
        return self.model_source != ModelCacheSource.none.value

    @property
    def worker_model_path(self) -> str:
        """Where workers load the weights from: the cache mount, or the spec's path/Hub ID as is."""
        return MODEL_MOUNT_PATH if self.uses_model_cache else self.spec.model.model_path
