"""The data directory (recordings, reference voices): its PersistentVolumeClaim and volume."""

from __future__ import annotations

from typing import Any

from .context import COMPONENT_DATA, Owner

# The volume's name says its source. Server-side apply merges a pod template's volumes by name, so
# one name switching from emptyDir to a claim would keep both sources in one volume (422 "may not
# specify more than 1 volume type"); under a new name the old volume goes and the new one comes.
SCRATCH_DATA_VOLUME = "data"
CLAIM_DATA_VOLUME = "data-claim"


def build_claim(owner: Owner, name: str, component: str, size: str, access_mode: str,
                storage_class: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": [access_mode], "resources": {"requests": {"storage": size}}}
    if storage_class:
        spec["storageClassName"] = storage_class
    return owner.adopt({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": owner.metadata(name, component),
        "spec": spec,
    })


def build_data_claim(owner: Owner) -> dict[str, Any] | None:
    """The data PVC, or None when the spec uses an existing claim or no persistent storage."""
    storage = owner.spec.storage
    if not storage.enabled or storage.existing_claim:
        return None
    return build_claim(owner, owner.data_claim, COMPONENT_DATA, storage.size, storage.access_mode,
                       storage.storage_class_name)


def data_volume(owner: Owner) -> dict[str, Any]:
    if not owner.spec.storage.enabled:
        return {"name": SCRATCH_DATA_VOLUME, "emptyDir": {}}
    return {"name": CLAIM_DATA_VOLUME, "persistentVolumeClaim": {"claimName": owner.data_claim}}


def data_mount(owner: Owner, path: str) -> dict[str, Any]:
    return {"name": data_volume(owner)["name"], "mountPath": path}
