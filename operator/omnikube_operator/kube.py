"""A small, dict-based Kubernetes API client for the objects the operator manages.

Children are plain dicts (as the builders make them), so one generic client serves every kind:
`get`, `list`, `create`, `patch` (JSON merge patch), `apply` (server-side apply with the
operator's field manager: creates when absent, puts back fields someone edited by hand, and is a
no-op when nothing differs) and `delete`. It rides on the official client's `ApiClient` for
configuration, TLS and auth. `served()` answers whether an API (policy/v1, the Prometheus
Operator's CRDs) exists, with a short cache so that new CRDs are noticed.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

FIELD_MANAGER = "omnikube-operator"
DISCOVERY_TTL_S = 30.0


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def base(self) -> str:
        return f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"

    def path(self, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
        parts = [self.base]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name:
            parts.append(name)
        if subresource:
            parts.append(subresource)
        return "/".join(parts)


_KNOWN = [
    Kind("v1", "ConfigMap", "configmaps"),
    Kind("v1", "Service", "services"),
    Kind("v1", "ServiceAccount", "serviceaccounts"),
    Kind("v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
    Kind("v1", "Pod", "pods"),
    Kind("v1", "Secret", "secrets"),
    Kind("v1", "Event", "events"),
    Kind("v1", "Node", "nodes", namespaced=False),
    Kind("apps/v1", "Deployment", "deployments"),
    Kind("batch/v1", "Job", "jobs"),
    Kind("rbac.authorization.k8s.io/v1", "Role", "roles"),
    Kind("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings"),
    Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    Kind("policy/v1beta1", "PodDisruptionBudget", "poddisruptionbudgets"),
    Kind("storage.k8s.io/v1", "StorageClass", "storageclasses", namespaced=False),
    Kind("monitoring.coreos.com/v1", "ServiceMonitor", "servicemonitors"),
    Kind("monitoring.coreos.com/v1", "PodMonitor", "podmonitors"),
    Kind("omnikube.dev/v1alpha1", "OmniDeployment", "omnideployments"),
    Kind("kopf.dev/v1", "KopfPeering", "kopfpeerings"),
    Kind("kopf.dev/v1", "ClusterKopfPeering", "clusterkopfpeerings", namespaced=False),
]
KINDS: dict[tuple[str, str], Kind] = {(k.api_version, k.kind): k for k in _KNOWN}


def kind_of(obj: dict[str, Any]) -> Kind:
    return KINDS[(obj["apiVersion"], obj["kind"])]



def api_message(exc: ApiException) -> str:
    """The API server's own words for a refusal (its Status message), else the HTTP reason."""
    try:
        return json.loads(exc.body or "{}").get("message") or str(exc.reason)
    except ValueError:
        return str(exc.reason)

class Kube:
    """Thin generic client; every method raises `ApiException` except where it says otherwise."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self.api = api_client or client.ApiClient()
        self._discovery: dict[str, tuple[float, set[str]]] = {}
        self._lock = threading.Lock()

    def _call(self, method: str, path: str, *, body: Any = None, query: list[tuple[str, Any]] | None = None,
              content_type: str = "application/json") -> Any:
        method, url, headers, body, _ = self.api.param_serialize(
            method, path, query_params=query or [], body=body, auth_settings=["BearerToken"],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
        )
        response = self.api.call_api(method, url, header_params=headers, body=body, _request_timeout=30)
        data = response.read()
        if not 200 <= response.status < 300:
            raise ApiException(http_resp=response)
        return json.loads(data) if data else {}

    # --- reads ---

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return self._call("GET", KINDS[(api_version, kind)].path(namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, api_version: str, kind: str, namespace: str | None, selector: str | None = None) -> list[dict[str, Any]]:
        query = [("labelSelector", selector)] if selector else []
        items = self._call("GET", KINDS[(api_version, kind)].path(namespace), query=query).get("items") or []
        for item in items:  # list items come without apiVersion/kind
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return items

    # --- writes ---

    def create(self, obj: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        """Create; with `dry_run` the API server validates and admits it but stores nothing."""
        meta = obj["metadata"]
        query = [("dryRun", "All")] if dry_run else []
        return self._call("POST", kind_of(obj).path(meta.get("namespace")), body=obj, query=query)

    def apply(self, obj: dict[str, Any], *, force: bool = True, dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply: the fields in `obj` become the operator's and take its values."""
        meta = obj["metadata"]
        query = [("fieldManager", FIELD_MANAGER), ("force", "true" if force else "false")]
        if dry_run:
            query.append(("dryRun", "All"))
        return self._call("PATCH", kind_of(obj).path(meta.get("namespace"), meta["name"]), body=obj, query=query, content_type="application/apply-patch+yaml")

    def patch(self, api_version: str, kind: str, namespace: str | None, name: str, patch: dict[str, Any],
              subresource: str | None = None) -> dict[str, Any]:
        return self._call("PATCH", KINDS[(api_version, kind)].path(namespace, name, subresource), body=patch,
                          content_type="application/merge-patch+json")

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str, *, uid: str | None = None,
               resource_version: str | None = None, propagation: str = "Background") -> bool:
        """Delete; False when already gone or no longer as described. `uid` makes sure a same-named
        successor is not hit; `resource_version` that the object has not changed since it was read."""
        body: dict[str, Any] = {"propagationPolicy": propagation}
        preconditions = {key: value for key, value in (("uid", uid), ("resourceVersion", resource_version)) if value}
        if preconditions:
            body["preconditions"] = preconditions
        try:
            self._call("DELETE", KINDS[(api_version, kind)].path(namespace, name), body=body)
            return True
        except ApiException as exc:
            if exc.status in (404, 409):
                return False
            raise

    # --- discovery ---

    def served(self, api_version: str, kind: str) -> bool:
        """Whether the API server serves this kind now (cached for a few seconds)."""
        now = time.monotonic()
        with self._lock:
            cached = self._discovery.get(api_version)
        if cached is None or now - cached[0] > DISCOVERY_TTL_S:
            try:
                resources = self._call("GET", KINDS[(api_version, kind)].base).get("resources") or []
                kinds = {r.get("kind") for r in resources}
            except ApiException as exc:
                if exc.status not in (404, 503):
                    raise
                kinds = set()
            cached = (now, kinds)
            with self._lock:
                self._discovery[api_version] = cached
        return kind in cached[1]
