"""The chart's rendered objects, and the plain manifests, are accepted by the real API server in a
server-side dry run: schema, RBAC rules, the sample against the OmniDeployment CRD; and the
operator's role is enough where the API server enforces owner-reference permissions."""

from __future__ import annotations

import json
import subprocess

import kopf
import pytest
import yaml

from omnikube import labels
from tests.fixtures.packaging import REPO, render_chart

pytestmark = pytest.mark.cluster

# Served only where the Prometheus Operator is installed; the local cluster has no such CRDs.
NEEDS_PROMETHEUS_OPERATOR = {"ServiceMonitor", "PrometheusRule"}
EVERYTHING = {"sample.enabled": True, "prometheusRule.enabled": True, "metrics.serviceMonitor.enabled": True}


def dry_run(cluster, objects: list[dict]) -> str:
    proc = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(objects), check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("values", [{}, EVERYTHING], ids=["defaults", "every-feature"])
def test_the_rendered_chart_passes_a_server_side_dry_run(k8s_cluster, omnideployment_crd, namespace, values):
    # Unique release names: the ClusterRole and its binding are cluster-scoped.
    objects = render_chart(values, release=f"dry-{namespace[-6:]}", namespace=namespace)
    applied = [o for o in objects if o["kind"] not in NEEDS_PROMETHEUS_OPERATOR]
    out = dry_run(k8s_cluster, applied)
    assert out.count("(server dry run)") == len(applied)


def test_a_sample_spec_the_crd_rejects_fails_the_dry_run_with_the_reason(k8s_cluster, omnideployment_crd, namespace):
    objects = render_chart({"sample.enabled": True, "sample.spec": {"workers": {"replicas": -1}}}, namespace=namespace)
    (sample,) = [o for o in objects if o["kind"] == "OmniDeployment"]
    proc = k8s_cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(sample), check=False)
    assert proc.returncode != 0 and "spec.workers.replicas" in proc.stderr


def test_the_plain_manifests_pass_a_server_side_dry_run(k8s_cluster, omnideployment_crd, namespace):
    text = (REPO / "manifests" / "install" / "operator.yaml").read_text().replace("omnikube-system", namespace)
    objects = [o for o in yaml.safe_load_all(text) if o and o["kind"] != "Namespace"]
    for obj in objects:  # cluster-scoped names must not collide with a real install
        if "namespace" not in obj["metadata"]:
            obj["metadata"]["name"] += f"-{namespace[-6:]}"
    dry_run(k8s_cluster, objects)


def _operator_rules_bound_to(cluster, namespace: str, rules: list[dict]) -> str:
    """A ClusterRole with `rules` bound to a fresh service account; returns the user to impersonate."""
    name = f"owner-refs-{namespace[-6:]}-{len(rules)}"
    cluster.apply_manifest([
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]},
    ])
    return f"system:serviceaccount:{namespace}:{name}"


def _owned_config_map(cluster, namespace: str, user: str, owner: dict) -> subprocess.CompletedProcess:
    child = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"child-{len(user)}", "namespace": namespace}}
    kopf.adopt(child, owner=owner)  # what the operator does to every child: blockOwnerDeletion=true
    return cluster.kubectl("--as", user, "create", "-f", "-", input=yaml.safe_dump(child), check=False)


def test_the_operator_role_may_block_its_owners_deletion_where_the_api_server_enforces_it(
        k8s_cluster, omnideployment_crd, namespace):
    # The local API server runs OwnerReferencesPermissionEnforcement, as hardened clusters do.
    sample = yaml.safe_load((REPO / "manifests" / "samples" / "minimal.yaml").read_text())
    sample["metadata"]["namespace"] = namespace
    k8s_cluster.apply_manifest(sample)
    owner = json.loads(k8s_cluster.kubectl("get", "-n", namespace, labels.PLURAL, sample["metadata"]["name"], "-o", "json").stdout)
    (role,) = [o for o in render_chart(namespace=namespace) if o["kind"] == "ClusterRole"]
    without_finalizers = [r for r in role["rules"] if "omnideployments/finalizers" not in r["resources"]]
    assert len(without_finalizers) == len(role["rules"]) - 1

    refused = _owned_config_map(k8s_cluster, namespace, _operator_rules_bound_to(k8s_cluster, namespace, without_finalizers), owner)
    assert refused.returncode != 0 and "cannot set blockOwnerDeletion" in refused.stderr

    allowed = _owned_config_map(k8s_cluster, namespace, _operator_rules_bound_to(k8s_cluster, namespace, role["rules"]), owner)
    assert allowed.returncode == 0, allowed.stderr
