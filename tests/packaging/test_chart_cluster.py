"""The chart's rendered objects, and the plain manifests, are accepted by the real API server in a
server-side dry run: schema, RBAC rules, the sample against the OmniDeployment CRD."""

from __future__ import annotations

import pytest
import yaml

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
