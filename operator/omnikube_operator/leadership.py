"""One operator at a time: kopf peering as leader election.

Every operator process writes a heartbeat with its priority into a peering object (KopfPeering
`omnikube` in each watched namespace, or ClusterKopfPeering `omnikube` when it watches all), and
pauses (its reconcile daemons stop) while a live peer has a higher priority. The priority is the
negated start time, so the operator that started first leads and a newcomer (a second replica, the
replacement of a deleted pod) waits, paused, until the leader has left the peering object on exit
or stopped sending heartbeats for `PEER_LIFETIME_S`. The CRDs are in manifests/crd/kopf-peerings.yaml.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from .kube import Kube

log = logging.getLogger(__name__)

PEERING_NAME = "omnikube"
API_VERSION = "kopf.dev/v1"
# A crashed leader (no goodbye) is presumed dead after this long; heartbeats go every 20-25 s.
PEER_LIFETIME_S = 30


def start_priority(now: float | None = None) -> int:
    """Older operators rank higher; milliseconds make a tie (which freezes both) practically impossible."""
    return -int((time.time() if now is None else now) * 1000)


def peering_objects(namespaces: list[str]) -> list[dict[str, Any]]:
    """The peering objects kopf will use: one per watched namespace, or one cluster-wide."""
    if not namespaces:
        return [{"apiVersion": API_VERSION, "kind": "ClusterKopfPeering", "metadata": {"name": PEERING_NAME}}]
    return [{"apiVersion": API_VERSION, "kind": "KopfPeering", "metadata": {"name": PEERING_NAME, "namespace": ns}}
            for ns in namespaces]


def ensure_peering_objects(kube: Kube, namespaces: list[str]) -> None:
    """Create the peering objects if missing: kopf waits, paused, on a peering object that never appears."""
    for obj in peering_objects(namespaces):
        try:
            kube.create(obj)
            log.info("created %s %s", obj["kind"], PEERING_NAME)
        except ApiException as exc:
            if exc.status != 409:
                raise


def configure(settings: kopf.OperatorSettings) -> None:
    settings.peering.lifetime = PEER_LIFETIME_S
