"""Least privilege, asked of the real API server with `kubectl auth can-i --as=system:serviceaccount:...`:
what the chart's operator account and the operator-made gateway account may and may not do, and
that the operator really works with nothing more than its namespaced Role."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from omnikube_operator import rbac
from omnikube_operator.context import Owner
from tests.fixtures.omnideployment import eventually
from tests.fixtures.packaging import render_chart

pytestmark = pytest.mark.cluster

RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
API_KEYS = "gateway-api-keys"


@pytest.fixture
def operator_account(k8s_cluster, omnideployment_crd, namespace) -> Iterator[Callable[..., str]]:
    """`operator_account(values)` installs the chart's RBAC (release in the test's namespace) and
    returns the operator's user name for impersonation; cluster-scoped parts are removed afterwards."""
    installed: list[dict] = []

    def install(values: dict) -> str:
        objects = [o for o in render_chart(values, release=f"rb-{namespace[-6:]}", namespace=namespace)
                   if o["kind"] in RBAC_KINDS]
        k8s_cluster.apply_manifest(objects)
        installed.extend(objects)
        (account,) = [o for o in objects if o["kind"] == "ServiceAccount"]
        return f"system:serviceaccount:{namespace}:{account['metadata']['name']}"

    yield install
    for obj in installed:
        if obj["kind"].startswith("Cluster"):
            k8s_cluster.kubectl("delete", obj["kind"], obj["metadata"]["name"], "--ignore-not-found", check=False)


def can(cluster, user: str, verb: str, resource: str, namespace: str | None = None) -> bool:
    scope = ["-n", namespace] if namespace else []
    proc = cluster.kubectl("auth", "can-i", "--as", user, verb, resource, *scope, check=False)
    assert proc.stdout.strip() in ("yes", "no"), proc.stderr
    return proc.stdout.strip() == "yes"


def test_with_watch_namespaces_the_operator_may_act_only_in_them(k8s_cluster, operator_account, namespace):
    user = operator_account({"operator.watchNamespaces": [namespace], "rbac.secretNames": [API_KEYS]})
    must = [("create", "pods"), ("delete", "pods"), ("patch", "deployments.apps"), ("create", "jobs.batch"),
            ("create", "rolebindings.rbac.authorization.k8s.io"), ("watch", "omnideployments.omnikube.dev"),
            ("patch", "omnideployments.omnikube.dev/status"), ("create", "kopfpeerings.kopf.dev"),
            ("get", f"secrets/{API_KEYS}")]
    for verb, resource in must:
        assert can(k8s_cluster, user, verb, resource, namespace), (verb, resource)
    for verb, resource in [("get", "secrets/some-other-secret"), ("list", "secrets"), ("update", "pods")]:
        assert not can(k8s_cluster, user, verb, resource, namespace), (verb, resource)
    for verb, resource in [("get", f"secrets/{API_KEYS}"), ("list", "secrets"), ("create", "pods"),
                           ("create", "deployments.apps"), ("delete", "jobs.batch"),
                           ("create", "rolebindings.rbac.authorization.k8s.io"), ("list", "omnideployments.omnikube.dev")]:
        assert not can(k8s_cluster, user, verb, resource, "kube-system"), ("kube-system", verb, resource)
    # Cluster-wide only what kopf and validation read.
    for verb, resource in [("list", "namespaces"), ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
                           ("get", "storageclasses.storage.k8s.io")]:
        assert can(k8s_cluster, user, verb, resource), (verb, resource)
    for verb, resource in [("create", "clusterrolebindings.rbac.authorization.k8s.io"), ("list", "nodes"),
                           ("create", "namespaces"), ("patch", "clusterkopfpeerings.kopf.dev")]:
        assert not can(k8s_cluster, user, verb, resource), (verb, resource)


def test_an_operator_for_every_namespace_still_reads_no_secret(k8s_cluster, operator_account, namespace):
    user = operator_account({})
    assert can(k8s_cluster, user, "create", "pods", "kube-system")  # all namespaces: cluster-wide by design
    assert can(k8s_cluster, user, "patch", "clusterkopfpeerings.kopf.dev")
    for ns in (namespace, "kube-system"):
        assert not can(k8s_cluster, user, "get", "secrets/anything", ns)
        assert not can(k8s_cluster, user, "list", "secrets", ns)


def test_the_gateway_account_only_reads_pods_of_its_namespace(k8s_cluster, namespace):
    owner = Owner.from_body({"metadata": {"name": "rb", "namespace": namespace, "uid": "none"}})
    objects = [rbac.build_service_account(owner), rbac.build_role(owner), rbac.build_role_binding(owner)]
    for obj in objects:  # applied by hand here, without an owner the garbage collector would chase
        obj["metadata"].pop("ownerReferences", None)
    k8s_cluster.apply_manifest(objects)
    user = f"system:serviceaccount:{namespace}:{owner.gateway}"
    for verb in ("get", "list", "watch"):
        assert can(k8s_cluster, user, verb, "pods", namespace)
        assert not can(k8s_cluster, user, verb, "pods", "kube-system")
    for verb, resource in [("create", "pods"), ("patch", "pods"), ("delete", "pods"), ("get", "secrets"),
                           ("list", "services"), ("get", "omnideployments.omnikube.dev")]:
        assert not can(k8s_cluster, user, verb, resource, namespace), (verb, resource)


def _token_kubeconfig(k8s_cluster, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig that logs in as `account` with its service-account token (1.20 makes a token Secret)."""
    def token() -> str | None:
        sa = yaml.safe_load(k8s_cluster.kubectl("get", "-n", namespace, "sa", account, "-o", "yaml").stdout)
        if not sa.get("secrets"):
            return None
        secret = yaml.safe_load(k8s_cluster.kubectl("get", "-n", namespace, "secret", sa["secrets"][0]["name"], "-o", "yaml").stdout)
        return base64.b64decode(secret["data"]["token"]).decode()

    value = eventually(token, 30, f"a token for service account {account}")
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "op",
        "clusters": [{"name": "local", "cluster": {"server": k8s_cluster.server, "certificate-authority": str(k8s_cluster.ca_file)}}],
        "users": [{"name": "op", "user": {"token": value}}],
        "contexts": [{"name": "op", "context": {"cluster": "local", "user": "op", "namespace": namespace}}],
    }))
    return path


def test_the_operator_reconciles_with_only_its_namespaced_role(k8s_cluster, operator_account, namespace, omni,
                                                               start_operator, tmp_path):
    user = operator_account({"operator.watchNamespaces": [namespace]})
    kubeconfig = _token_kubeconfig(k8s_cluster, namespace, user.rsplit(":", 1)[1], tmp_path / "operator.kubeconfig")
    start_operator("--kubeconfig", str(kubeconfig))
    omni.create("least", {"backend": {"type": "simulated"}, "modelCache": {"source": "none"}, "storage": {"enabled": False},
                          "workers": {"replicas": 1, "nodeSelector": {"omnikube.test/no-such-node": "true"}},
                          "gateway": {"replicas": 0}, "auth": {"apiKeySecret": {"name": API_KEYS, "key": "keys"}}})
    omni.wait_workers("least", ["least-worker-0"])
    for api_version, kind, name in [("apps/v1", "Deployment", "least-gateway"), ("rbac.authorization.k8s.io/v1", "Role", "least-gateway"),
                                    ("policy/v1beta1", "PodDisruptionBudget", "least-workers")]:
        eventually(lambda: omni.child(api_version, kind, name), 30, f"{kind} {name}")
