"""Worker pods (one per GPU, managed directly so the operator decides which one goes) and their
PodDisruptionBudget.

A worker pod's name is fixed by its index (`NAME-worker-N`), so a restarted operator can never make
a second pod for the same GPU slot. The template hash label says which spec a pod was built from;
a pod whose hash differs from the current one is rolled.
"""

from __future__ import annotations

import math
from typing import Any

from omnikube import labels
from omnikube.config import ChatCache
from omnikube.spec import BackendType

from .configmap import worker_config_hash
from .context import CONFIG_DIR, CONFIG_HASH, CONFIG_PATH, DATA_MOUNT_PATH, Owner, short_hash
from .lockdown import lock_down
from .model_cache import model_volume
from .storage import data_mount, data_volume

WORKER_CONTAINER = "worker"
# Kubernetes' default terminationMessagePath: a failed model load's reason lands in the container's
# terminated state, and the OmniDeployment's Degraded condition quotes it (status.py).
TERMINATION_LOG = "/dev/termination-log"
PORT_NAME = "worker"
CONFIG_VOLUME = "config"
PROBE_PERIOD_S = 5
MODEL_LOAD_S = 16        # the seed's measured load time
COMPILE_EXTRA_S = 60     # torch.compile on first inference (the guide); the static chat cache at load: +37 s measured
STARTUP_SAFETY = 4       # startup budget = SAFETY x expected time, for slow disks and cold caches
# The worker drains for its termination grace period less this (in-flight requests, then replay
# videos being made; `--drain-seconds`), then exits by itself: an idle worker left 1.3 s after
# SIGTERM on the local node, so the kubelet's SIGKILL at the end of the grace never cuts a write.
EXIT_MARGIN_S = 3


def drain_seconds(owner: Owner) -> int:
    return max(0, owner.spec.workers.termination_grace_period_seconds - EXIT_MARGIN_S)


def worker_port(owner: Owner, index: int) -> int:
    """Same rule as outside Kubernetes: worker N listens on worker_base_port + N."""
    return owner.spec.service.worker_base_port + index


def startup_failure_threshold(owner: Owner) -> int:
    compiles = owner.spec.service.compile or owner.spec.model.chat_cache == ChatCache.static  # both compile at load
    expected = MODEL_LOAD_S + (COMPILE_EXTRA_S if compiles else 0)
    return math.ceil(expected * STARTUP_SAFETY / PROBE_PERIOD_S)


def _simulated_env(owner: Owner) -> list[dict[str, str]]:
    sim = owner.spec.backend.simulated
    values = {
        "OMNIKUBE_SIM_LOAD_S": sim.load_seconds,
        "OMNIKUBE_SIM_PREFILL_MS": sim.prefill_ms,
        "OMNIKUBE_SIM_TOKENS_PER_S": sim.tokens_per_second,
        "OMNIKUBE_SIM_DUPLEX_STEP_MS": sim.duplex_step_ms,
    }
    return [{"name": k, "value": str(v)} for k, v in values.items()]


def _resources(owner: Owner) -> dict[str, Any]:
    workers = owner.spec.workers
    resources = workers.resources.model_dump(exclude_none=True)
    resources.setdefault("limits", {})[workers.gpu_resource] = 1
    return resources


def _container(owner: Owner, index: int) -> dict[str, Any]:
    workers = owner.spec.workers
    port = worker_port(owner, index)
    # /readyz is 503 until the model is loaded (and after a failed load); /health always answers
    # 200, as the original's clients expect, so it only tells that the process is alive.
    ready = {"httpGet": {"path": "/readyz", "port": PORT_NAME}, "periodSeconds": PROBE_PERIOD_S, "timeoutSeconds": 3}
    alive = {**ready, "httpGet": {"path": "/health", "port": PORT_NAME}}
    mounts = [
        {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True},
        data_mount(owner, DATA_MOUNT_PATH),
    ]
    model = model_volume(owner)
    if model:
        mounts.append(model[1])
    env = [{"name": "OMNIKUBE_CONFIG", "value": CONFIG_PATH}]
    if owner.spec.backend.type == BackendType.simulated.value:
        env += _simulated_env(owner)
    return {
        "name": WORKER_CONTAINER,
        "image": workers.image,
        "imagePullPolicy": workers.image_pull_policy,
        "command": [
            "omnikube-worker", "--worker-index", str(index), "--config", CONFIG_PATH,
            "--backend", owner.spec.backend.type, "--host", "0.0.0.0", "--port", str(port),
            "--drain-seconds", str(drain_seconds(owner)), "--termination-log", TERMINATION_LOG,
        ],
        "ports": [{"name": PORT_NAME, "containerPort": port, "protocol": "TCP"}],
        "env": env,
        "resources": _resources(owner),
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG,
        # Startup covers the model load (and compile); readiness then takes a dead worker out of
        # rotation within ~10 s; liveness restarts one that stopped answering for a minute.
        "startupProbe": {**ready, "failureThreshold": startup_failure_threshold(owner)},
        "readinessProbe": {**ready, "failureThreshold": 2},
        "livenessProbe": {**alive, "periodSeconds": 15, "failureThreshold": 4},
    }


def _pod_spec(owner: Owner, index: int) -> dict[str, Any]:
    workers = owner.spec.workers
    volumes = [{"name": CONFIG_VOLUME, "configMap": {"name": owner.config_map}}, data_volume(owner)]
    model = model_volume(owner)
    if model:
        volumes.append(model[0])
    spec: dict[str, Any] = {
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": workers.termination_grace_period_seconds,
        "enableServiceLinks": False,
        "hostname": owner.worker_pod(index),
        "subdomain": owner.workers_service,
        "containers": [_container(owner, index)],
        "volumes": volumes,
        "nodeSelector": workers.node_selector,
        "tolerations": [t.model_dump(by_alias=True, exclude_none=True) for t in workers.tolerations],
    }
    if workers.affinity:
        spec["affinity"] = workers.affinity
    return lock_down(spec, tmp_limit="4Gi")


def template_hash(owner: Owner) -> str:
    """Hash of everything a worker pod is made of (index aside) and of the config it reads."""
    return short_hash({"pod": _pod_spec(owner, 0), "config": worker_config_hash(owner)})


def build_worker_pod(owner: Owner, index: int) -> dict[str, Any]:
    pod_labels = {**owner.labels(labels.COMPONENT_WORKER), labels.WORKER_INDEX: str(index),
                  labels.TEMPLATE_HASH: template_hash(owner)}
    annotations = {labels.WORKER_PORT: str(worker_port(owner, index)), CONFIG_HASH: worker_config_hash(owner)}
    return owner.adopt({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": owner.worker_pod(index), "labels": pod_labels, "annotations": annotations},
        "spec": _pod_spec(owner, index),
    })


def build_pdb(owner: Owner, api_version: str) -> dict[str, Any]:
    """Voluntary evictions (node drains) take at most maxUnavailable workers at once."""
    return owner.adopt({
        "apiVersion": api_version,
        "kind": "PodDisruptionBudget",
        "metadata": owner.metadata(owner.workers_service, labels.COMPONENT_WORKER),
        "spec": {
            "maxUnavailable": owner.spec.workers.max_unavailable,
            "selector": {"matchLabels": owner.selector(labels.COMPONENT_WORKER)},
        },
    })
