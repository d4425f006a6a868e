"""Children built from an OmniDeployment spec (pure functions, no cluster)."""

from __future__ import annotations

import json

import pytest

from omnikube import labels
from omnikube.config import OmniConfig
from omnikube_operator import configmap, gateway, model_cache, pods, preflight, rbac, services
from omnikube_operator.context import CONFIG_FILE, Owner
from tests.fixtures.pod_security import restricted_violations, writable_root_containers


def owner(**spec) -> Owner:
    return Owner.from_body({"metadata": {"name": "omni", "namespace": "ns", "uid": "uid-1", "generation": 1}, "spec": spec})


def test_configmap_holds_a_seed_format_config_json():
    cm = configmap.build_configmap(owner(service={"maxQueueSize": 7}, model={"attnImplementation": "sdpa"}))
    config = OmniConfig.model_validate(json.loads(cm["data"][CONFIG_FILE]))
    assert config.service.max_queue_size == 7
    assert config.model.attn_implementation == "sdpa"
    assert config.model.model_path == "/models"  # the cache mount, not the Hub ID


def test_every_child_is_owned_and_labelled():
    o = owner()
    children = [configmap.build_configmap(o), pods.build_worker_pod(o, 0), gateway.build_gateway_deployment(o),
                services.build_gateway_service(o), services.build_workers_service(o), rbac.build_role(o),
                model_cache.build_download_job(o)]
    for child in children:
        meta = child["metadata"]
        assert meta["namespace"] == "ns"
        assert meta["ownerReferences"][0]["uid"] == "uid-1" and meta["ownerReferences"][0]["controller"] is True
        assert meta["labels"][labels.DEPLOYMENT] == "omni"


def test_worker_pod_requests_one_gpu_and_runs_the_worker_with_its_index():
    pod = pods.build_worker_pod(owner(backend={"type": "simulated"}), 3)
    container = pod["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["command"][:3] == ["omnikube-worker", "--worker-index", "3"]
    assert "--backend" in container["command"] and "simulated" in container["command"]
    assert pod["metadata"]["labels"][labels.WORKER_INDEX] == "3"
    assert pod["metadata"]["annotations"][labels.WORKER_PORT] == "22403"
    assert labels.worker_selector("omni").split(",")[0].split("=")[1] == pod["metadata"]["labels"][labels.DEPLOYMENT]


def test_a_worker_writes_a_failed_loads_reason_where_the_kubelet_reads_it():
    container = pods.build_worker_pod(owner(), 0)["spec"]["containers"][0]
    command = container["command"]
    assert command[command.index("--termination-log") + 1] == container["terminationMessagePath"]


@pytest.mark.parametrize("spec", [{"service": {"compile": True}}, {"model": {"chatCache": "static"}}],
                         ids=["service.compile", "model.chatCache static"])
def test_startup_probe_allows_for_compile(spec):
    plain = pods.build_worker_pod(owner(), 0)["spec"]["containers"][0]["startupProbe"]
    compiled = pods.build_worker_pod(owner(**spec), 0)["spec"]["containers"][0]["startupProbe"]
    assert plain["periodSeconds"] * plain["failureThreshold"] >= 16
    assert compiled["periodSeconds"] * compiled["failureThreshold"] >= plain["periodSeconds"] * plain["failureThreshold"] + 60


def test_a_loading_worker_is_not_ready_but_alive():
    container = pods.build_worker_pod(owner(), 0)["spec"]["containers"][0]
    # /readyz is 503 while the model loads; /health answers 200 from the first second.
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"


def _built_pod_specs(o: Owner) -> dict[str, dict]:
    return {"worker": pods.build_worker_pod(o, 0)["spec"],
            "gateway": gateway.build_gateway_deployment(o)["spec"]["template"]["spec"],
            "download": model_cache.build_download_job(o)["spec"]["template"]["spec"]}


def test_workers_gateway_and_download_pods_pass_the_restricted_pod_security_standard():
    for kind, spec in _built_pod_specs(owner()).items():
        assert restricted_violations(spec) == [], kind
        assert writable_root_containers(spec) == [], kind
        assert spec["securityContext"]["runAsUser"] == 10001 and spec["securityContext"]["fsGroup"] == 10001


def test_locked_down_pods_write_only_to_volumes():
    for kind, spec in _built_pod_specs(owner()).items():
        mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes[mounts["/tmp"]]["emptyDir"] is not None, kind
        assert volumes[mounts["/var/cache/omnikube"]]["emptyDir"] is not None, kind
        env = {e["name"]: e["value"] for e in spec["containers"][0]["env"] if "value" in e}
        assert env["XDG_CACHE_HOME"] == "/var/cache/omnikube" and env["HF_HOME"].startswith("/var/cache/omnikube/"), kind


def test_only_the_gateway_gets_a_service_account_token():
    specs = _built_pod_specs(owner())
    assert specs["gateway"]["automountServiceAccountToken"] is True
    assert specs["worker"]["automountServiceAccountToken"] is False
    assert specs["download"]["automountServiceAccountToken"] is False


def test_host_path_weights_are_the_one_thing_restricted_refuses():
    spec = pods.build_worker_pod(owner(modelCache={"source": "hostPath", "hostPath": {"path": "/w"}}), 0)["spec"]
    assert restricted_violations(spec) == ["volume model is ['hostPath']"]


def test_template_hash_changes_with_image_but_not_with_replicas_or_gateway_settings():
    base = pods.template_hash(owner())
    assert pods.template_hash(owner(workers={"replicas": 5})) == base
    assert pods.template_hash(owner(service={"maxQueueSize": 3})) == base
    assert pods.template_hash(owner(workers={"image": "omnikube/worker:other"})) != base
    assert pods.template_hash(owner(model={"attnImplementation": "eager"})) != base


def test_gateway_role_allows_only_reading_pods():
    assert rbac.build_role(owner())["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]


def test_gateway_runs_discovery_for_its_deployment():
    command = gateway.build_gateway_deployment(owner())["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:5] == ["omnikube-gateway", "--deployment", "omni", "--namespace", "ns"]


def test_no_model_cache_means_workers_load_model_path_themselves():
    o = owner(modelCache={"source": "none"}, model={"modelPath": "/weights/x"})
    assert model_cache.build_download_job(o) is None
    assert json.loads(configmap.build_configmap(o)["data"][CONFIG_FILE])["model"]["model_path"] == "/weights/x"


def test_download_job_passes_mirror_and_token_secret():
    o = owner(modelCache={"download": {"endpoint": "https://hf-mirror.com", "tokenSecret": {"name": "hf", "key": "t"}}})
    env = {e["name"]: e for e in model_cache.build_download_job(o)["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["HF_ENDPOINT"]["value"] == "https://hf-mirror.com"
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf", "key": "t"}
    assert env["OMNIKUBE_REPO"]["value"] == "openbmb/MiniCPM-o-4_5"


def test_job_state_reads_failure_reason():
    job = {"metadata": {"name": "j"}, "status": {"conditions": [{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}]}}
    state = model_cache.job_state(job)
    assert state.failed and "BackoffLimitExceeded" in state.message


@pytest.mark.parametrize("image", ["omnikube/worker:dev", "worker", "registry.example.com:5000/a/b-c__d.e:v1.2",
                                   "ghcr.io/openbmb/minicpm@sha256:" + "a" * 64, "localhost/x:latest"])
def test_valid_image_references_pass(image):
    assert preflight.image_problem(image, "spec.workers.image") is None


@pytest.mark.parametrize("image", ["Not A Valid Image!!", "Omnikube/Worker:dev", "worker:", "a//b", "x:tag with space",
                                   "/leading-slash", "x@sha256:short"])
def test_image_strings_the_kubelet_cannot_parse_are_refused_with_the_field_named(image):
    problem = preflight.image_problem(image, "spec.workers.image")
    assert problem is not None and problem.reason == "InvalidImage"
    assert "spec.workers.image" in problem.message and repr(image) in problem.message


def test_a_stopping_gateway_leaves_the_service_before_it_stops_listening():
    spec = gateway.build_gateway_deployment(owner(gateway={"replicas": 2}))["spec"]
    container = spec["template"]["spec"]["containers"][0]
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pause >= 3 and spec["template"]["spec"]["terminationGracePeriodSeconds"] > pause
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz" and container["readinessProbe"]["periodSeconds"] == 1
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    assert spec["replicas"] == 2


def test_gateway_disruption_budget_lets_one_gateway_go_at_a_time():
    pdb = gateway.build_gateway_pdb(owner(), "policy/v1")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"][labels.COMPONENT] == labels.COMPONENT_GATEWAY
