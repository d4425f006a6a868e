"""The local node runs real pods (dockerd + kubelet + kube-proxy), advertises GPUs, serves
Services, and keeps every packet on this machine."""

import contextlib
import ipaddress
import os
import signal
import subprocess
import uuid

import pytest

from tests.fixtures.cluster import TOOLBOX_IMAGE, Cluster, eventually, pod_manifest

pytestmark = pytest.mark.node

POD_NETWORK = ipaddress.ip_network("172.17.0.0/16")
# Deadlines, not targets: other sessions load this machine heavily at times.
POD_DEADLINE_S = 180


def _pod(core_v1, namespace: str, name: str):
    return core_v1.read_namespaced_pod(name, namespace)


def _run_to_completion(cluster: Cluster, core_v1, namespace: str, name: str, script: str) -> str:
    """Run `script` in a busybox pod on the node; return its output once it has exited."""
    cluster.apply_manifest(pod_manifest(name, ["sh", "-c", script], image=TOOLBOX_IMAGE,
                                        restartPolicy="Never"), namespace=namespace)
    eventually(lambda: _pod(core_v1, namespace, name).status.phase in ("Succeeded", "Failed"),
               POD_DEADLINE_S, f"pod {name} to finish")
    return core_v1.read_namespaced_pod_log(name, namespace)


def test_the_node_is_ready_and_advertises_the_configured_gpu_count(k8s_node, core_v1):
    node = core_v1.read_node(k8s_node.node_name)

    ready = {c.type: c.status for c in node.status.conditions}["Ready"]
    assert ready == "True"
    assert node.status.capacity["nvidia.com/gpu"] == str(k8s_node.node_gpus)
    assert node.status.allocatable["nvidia.com/gpu"] == str(k8s_node.node_gpus)
    assert not [t for t in node.spec.taints or [] if t.key == "node.kubernetes.io/not-ready"]


def test_a_pod_on_the_node_runs_and_gets_an_ip_from_the_docker_bridge(k8s_node, core_v1,
                                                                       namespace):
    k8s_node.apply_manifest(pod_manifest("sleeper"), namespace=namespace)

    pod = eventually(lambda: (p := _pod(core_v1, namespace, "sleeper")).status.phase == "Running"
                     and p, POD_DEADLINE_S, "pod sleeper Running")

    assert pod.spec.node_name == k8s_node.node_name
    assert ipaddress.ip_address(pod.status.pod_ip) in POD_NETWORK


def test_a_pod_limited_to_one_gpu_is_scheduled_against_the_advertised_gpus(k8s_node, core_v1,
                                                                           namespace):
    manifest = pod_manifest("gpu-user")
    manifest["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": 1}}
    k8s_node.apply_manifest(manifest, namespace=namespace)

    pod = eventually(lambda: (p := _pod(core_v1, namespace, "gpu-user")).status.phase == "Running"
                     and p, POD_DEADLINE_S, "pod gpu-user Running")
    assert pod.spec.node_name == k8s_node.node_name


def test_a_pod_asking_for_more_gpus_than_the_node_has_stays_pending(k8s_node, core_v1, namespace):
    manifest = pod_manifest("too-greedy")
    manifest["spec"]["containers"][0]["resources"] = {
        "limits": {"nvidia.com/gpu": k8s_node.node_gpus + 1}}
    k8s_node.apply_manifest(manifest, namespace=namespace)

    def unschedulable():
        conditions = _pod(core_v1, namespace, "too-greedy").status.conditions or []
        return any(c.type == "PodScheduled" and c.reason == "Unschedulable" for c in conditions)

    assert eventually(unschedulable, POD_DEADLINE_S, "the scheduler to refuse the pod")


def test_a_pod_connecting_to_an_outside_address_is_refused_at_once(k8s_node, core_v1, namespace):
    out = _run_to_completion(k8s_node, core_v1, namespace, "egress",
                             "echo | nc -w 5 1.1.1.1 80 2>&1; echo exit=$?")

    assert "Connection refused" in out, out
    assert "exit=0" not in out


def test_a_pod_connecting_to_an_unserved_cluster_ip_is_refused_at_once(k8s_node, core_v1,
                                                                       namespace):
    # 10.0.0.250 lies in the service range; no Service is ever given it here.
    out = _run_to_completion(k8s_node, core_v1, namespace, "unserved",
                             "echo | nc -w 5 10.0.0.250 80 2>&1; echo exit=$?")

    assert "Connection refused" in out, out
    assert "exit=0" not in out


def test_a_pod_reaches_a_service_cluster_ip_and_the_api_server(k8s_node, core_v1, namespace):
    server = pod_manifest("web", ["sh", "-c", "echo hello-from-web > /tmp/index.html && "
                                  "httpd -f -p 8080 -h /tmp"], image=TOOLBOX_IMAGE)
    server["metadata"]["labels"] = {"app": "web"}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}
    k8s_node.apply_manifest([server, service], namespace=namespace)
    cluster_ip = core_v1.read_namespaced_service("web", namespace).spec.cluster_ip
    eventually(lambda: _pod(core_v1, namespace, "web").status.phase == "Running", POD_DEADLINE_S,
               "web Running")

    out = _run_to_completion(
        k8s_node, core_v1, namespace, "client",
        f"printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {cluster_ip} 80; "
        # The API server's service IP (kubernetes.default): a TCP connect is enough here.
        "echo | nc -w 3 $KUBERNETES_SERVICE_HOST $KUBERNETES_SERVICE_PORT && echo api=reachable")

    assert "hello-from-web" in out, out
    assert "api=reachable" in out, out


def _docker(cluster: Cluster, *args: str) -> str:
    return subprocess.run(["docker", "-H", cluster.docker_host, *args], check=True, capture_output=True,
                          text=True, timeout=60).stdout


def test_a_dockerd_killed_with_its_containers_running_starts_again(k8s_node, core_v1):
    # What a machine that goes away mid-run leaves behind: dockerd's pid file and one containerd
    # task per container in its exec root, both under the cache that the next run reuses.
    names = [f"killed-with-dockerd-{uuid.uuid4().hex[:6]}-{i}" for i in range(3)]
    for name in names:
        _docker(k8s_node, "run", "-d", "--name", name, TOOLBOX_IMAGE, "sleep", "600")
    container_pids = [int(_docker(k8s_node, "inspect", "-f", "{{.State.Pid}}", name)) for name in names]
    exec_root = str(k8s_node.state_dir / "docker" / "exec")
    runtime_pids = [int(pid) for pid in subprocess.run(["pgrep", "-f", exec_root], capture_output=True,
                                                        text=True).stdout.split()]
    dockerd_pid = int((k8s_node.state_dir / "pids" / "dockerd.pid").read_text())
    for pid in [dockerd_pid, *runtime_pids, *container_pids]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    k8s_node.up_node()

    listed = _docker(k8s_node, "ps", "-a", "--format", "{{.Names}} {{.State}}").splitlines()
    assert {f"{name} exited" for name in names} <= set(listed)
    _docker(k8s_node, "rm", "-f", *names)
    eventually(lambda: {c.type: c.status for c in core_v1.read_node(k8s_node.node_name).status.conditions}["Ready"] == "True",
               POD_DEADLINE_S, "the node to be Ready again")
