"""The gateway's identity: a ServiceAccount allowed exactly what worker discovery needs
(get/list/watch pods in its own namespace), nothing more."""

from __future__ import annotations

from typing import Any

from omnikube import labels

from .context import Owner


def build_service_account(owner: Owner) -> dict[str, Any]:
    return owner.adopt({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": owner.metadata(owner.gateway, labels.COMPONENT_GATEWAY),
    })


def build_role(owner: Owner) -> dict[str, Any]:
    return owner.adopt({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": owner.metadata(owner.gateway, labels.COMPONENT_GATEWAY),
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
    })


def build_role_binding(owner: Owner) -> dict[str, Any]:
    return owner.adopt({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": owner.metadata(owner.gateway, labels.COMPONENT_GATEWAY),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": owner.gateway},
        "subjects": [{"kind": "ServiceAccount", "name": owner.gateway, "namespace": owner.namespace}],
    })
