"""Kubernetes Events on the OmniDeployment, one for every action the operator takes, so that
`kubectl describe omni NAME` tells the story. Repeated warnings with the same message are posted
once (until the message changes), so a spec stuck in Degraded does not flood the namespace."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone
from typing import Any

from kubernetes.client.exceptions import ApiException

from omnikube import labels

from .kube import Kube

log = logging.getLogger(__name__)
COMPONENT = labels.MANAGER


class Recorder:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._last_warning: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def normal(self, owner: dict[str, Any], reason: str, message: str) -> None:
        self._post(owner, "Normal", reason, message)

    def warning(self, owner: dict[str, Any], reason: str, message: str) -> None:
        key = (owner["metadata"].get("uid", ""), reason)
        with self._lock:
            if self._last_warning.get(key) == message:
                return
            self._last_warning[key] = message
        self._post(owner, "Warning", reason, message)

    def clear_warning(self, owner: dict[str, Any], reason: str) -> None:
        with self._lock:
            self._last_warning.pop((owner["metadata"].get("uid", ""), reason), None)

    def _post(self, owner: dict[str, Any], type_: str, reason: str, message: str) -> None:
        meta = owner["metadata"]
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": labels.API_VERSION, "kind": labels.KIND, "name": meta["name"],
                "namespace": meta["namespace"], "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        log.info("%s/%s %s: %s", meta["namespace"], meta["name"], reason, message)
        try:
            self.kube.create(event)
        except ApiException as exc:  # an event lost is no reason to fail a reconcile
            log.warning("could not post event %s: %s", reason, exc.reason)
