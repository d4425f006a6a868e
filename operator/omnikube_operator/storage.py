"""The data directory (recordings, reference voices): its PersistentVolumeClaim and volume."""

from __future__ import annotations

from typing import Any

from .context import COMPONENT_DATA, Owner

DATA_VOLUME = "data"


def build_data_claim(owner: Owner) -> dict[str, Any] | None:
    """The data PVC, or None when the spec uses an existing claim or no persistent storage."""
    storage = owner.spec.storage
    if not storage.enabled or storage.existing_claim:
        return None
    spec: dict[str, Any] = {
        "accessModes": [storage.access_mode],
        "resources": {"requests": {"storage": storage.size}},
    }
    if storage.storage_class_name:
        spec["storageClassName"] = storage.storage_class_name
    return owner.adopt({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": owner.metadata(owner.data_claim, COMPONENT_DATA),
        "spec": spec,
    })


def data_volume(owner: Owner) -> dict[str, Any]:
    if not owner.spec.storage.enabled:
        return {"name": DATA_VOLUME, "emptyDir": {}}
    return {"name": DATA_VOLUME, "persistentVolumeClaim": {"claimName": owner.data_claim}}
