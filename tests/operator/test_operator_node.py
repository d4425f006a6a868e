"""The operator with the real node: worker and gateway pods really start from the local dev images
and the OmniDeployment reaches Ready, then scales both ways."""

from __future__ import annotations

import subprocess

import pytest

from omnikube import labels
from tests.fixtures.omnideployment import eventually, load_sample
from tests.fixtures.pod_security import restricted_violations, writable_root_containers
from tests.operator.test_gateway_ha_node import create_simulated

pytestmark = [pytest.mark.cluster, pytest.mark.node]

IMAGES = ("omnikube/worker:dev", "omnikube/gateway:dev")


@pytest.fixture
def dev_images(k8s_node) -> None:
    """The images the simulated sample runs must be in the node's dockerd (the packaging setup builds them)."""
    env = {"DOCKER_HOST": k8s_node.docker_host, "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}
    missing = [image for image in IMAGES
               if subprocess.run(["docker", "image", "inspect", image], env=env, capture_output=True).returncode != 0]
    assert not missing, f"images {missing} are not in the node's dockerd; build them with the packaging scripts"


def test_the_simulated_sample_becomes_ready_with_real_pods_and_scales(omni, start_operator, dev_images):
    sample = load_sample("simulated")
    name, spec = sample["metadata"]["name"], sample["spec"]
    spec["workers"]["replicas"] = 1  # the node's few GPUs are shared with other tests
    start_operator()
    omni.create(name, spec)
    omni.wait_condition(name, "Ready", "True", timeout=240)
    status = omni.status(name)
    assert status["readyWorkers"] == 1 and status["workers"][0]["workerStatus"] == "idle"
    assert omni.child("apps/v1", "Deployment", f"{name}-gateway")["status"]["availableReplicas"] == 1
    omni.cluster.kubectl("scale", "-n", omni.namespace, f"omni/{name}", "--replicas=2")
    eventually(lambda: omni.status(name).get("readyWorkers") == 2, 180, "two ready workers")
    omni.cluster.kubectl("scale", "-n", omni.namespace, f"omni/{name}", "--replicas=1")
    omni.wait_workers(name, [f"{name}-worker-0"], timeout=120)


def test_locked_down_worker_and_gateway_pods_run_read_only_on_the_node(omni, start_operator, omnikube_images):
    # Images built from this checkout: the lock-down must hold for the code as it is now.
    sample = load_sample("simulated")
    name, spec = sample["metadata"]["name"], sample["spec"]
    spec["workers"]["replicas"] = 1
    start_operator()
    omni.create(name, spec)
    omni.wait_condition(name, "Ready", "True", timeout=240)
    for component in (labels.COMPONENT_WORKER, labels.COMPONENT_GATEWAY):
        pod = next(p for p in omni.pods(name, component) if not p["metadata"].get("deletionTimestamp"))
        # The pod as the API server stored it (after defaulting), not as the operator built it.
        assert restricted_violations(pod["spec"]) == [], component
        assert writable_root_containers(pod["spec"]) == [], component
        write = "import sys\nfor path in sys.argv[1:]:\n    open(path + '/probe', 'w').write('x')\n    print('wrote', path)"
        pod_name = pod["metadata"]["name"]
        ok = omni.cluster.kubectl("exec", "-n", omni.namespace, pod_name, "--", "python3", "-c", write,
                                  "/tmp", "/var/cache/omnikube", "/var/lib/omnikube/data")
        assert ok.stdout.count("wrote") == 3, ok.stdout
        refused = omni.cluster.kubectl("exec", "-n", omni.namespace, pod_name, "--", "python3", "-c", write,
                                       "/opt/omnikube", check=False)
        assert refused.returncode != 0 and "Read-only file system" in refused.stderr, (component, refused.stderr)


def test_a_worker_that_cannot_load_its_model_makes_the_deployment_degraded_with_the_reason(omni, start_operator,
                                                                                          omnikube_images):
    # The CPU image has no torch, so the real backend's load fails there, as it would on bad weights;
    # the reason must reach the OmniDeployment, not only the pod's log.
    name = create_simulated(omni, start_operator, backend={"type": "minicpmo"})
    degraded = omni.wait_condition(name, "Degraded", "True", reason="WorkerCrashLooping", timeout=180)
    assert f"{name}-worker-0: CrashLoopBackOff: exit code 3: model load failed: RuntimeError: the minicpmo backend " \
           "needs torch" in degraded["message"], degraded["message"]
