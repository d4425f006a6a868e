"""The local control plane is a real, secured Kubernetes API: TLS against the cluster CA, RBAC
enforced, and an API server restart that clients live through."""

import ssl

import httpx
import pytest

from tests.fixtures.cluster import Cluster, eventually

pytestmark = pytest.mark.cluster


def _get(cluster: Cluster, path: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(cluster.server + path, headers=headers, verify=ssl.create_default_context(cafile=str(cluster.ca_file)), timeout=10)


def test_the_admin_token_lists_namespaces_over_tls_verified_by_the_cluster_ca(k8s_cluster):
    response = _get(k8s_cluster, "/api/v1/namespaces", k8s_cluster.token)

    assert response.status_code == 200
    assert "kube-system" in {item["metadata"]["name"] for item in response.json()["items"]}


def test_an_anonymous_request_is_forbidden_by_rbac(k8s_cluster):
    response = _get(k8s_cluster, "/api/v1/namespaces", None)

    assert response.status_code == 403
    assert response.json()["reason"] == "Forbidden"


def test_an_unknown_token_is_refused_as_unauthorized(k8s_cluster):
    response = _get(k8s_cluster, "/api/v1/namespaces", "not-a-token")

    assert response.status_code == 401


def test_a_service_account_gets_only_what_a_role_binding_grants(k8s_cluster, namespace):
    account = f"system:serviceaccount:{namespace}:default"

    def can_list_pods() -> str:
        proc = k8s_cluster.kubectl("auth", "can-i", "list", "pods", "-n", namespace,
                                   "--as", account, check=False)
        return proc.stdout.strip()

    assert can_list_pods() == "no"
    k8s_cluster.kubectl("create", "rolebinding", "view", "-n", namespace, "--clusterrole=view",
                        f"--serviceaccount={namespace}:default")
    assert eventually(lambda: can_list_pods() == "yes", 10, "RBAC to grant the binding")


def test_after_an_api_server_restart_the_api_answers_with_the_same_objects(k8s_cluster, namespace):
    k8s_cluster.kubectl("create", "configmap", "survivor", "-n", namespace, "--from-literal=a=1")
    pid_before = k8s_cluster.apiserver_pid()

    k8s_cluster.restart_apiserver()

    assert k8s_cluster.apiserver_pid() != pid_before
    got = k8s_cluster.kubectl("get", "configmap", "survivor", "-n", namespace,
                              "-o", "jsonpath={.data.a}")
    assert got.stdout == "1"


def test_the_controller_manager_gives_a_namespace_its_default_service_account_token(
        k8s_cluster, core_v1, namespace):
    # Pods' in-cluster clients need the token secret with the CA: proves the token controller runs.
    def token_secret():
        secrets = core_v1.list_namespaced_secret(namespace).items
        return [s for s in secrets if s.type == "kubernetes.io/service-account-token"]

    secret = eventually(token_secret, 30, "the default service account's token secret")[0]
    assert {"ca.crt", "token", "namespace"} <= set(secret.data)
