"""The OmniDeployment API (`omnikube.dev/v1alpha1`): spec and status as pydantic models.

This module is the single source of truth for the custom resource: `omnikube.crd` generates the
CRD's OpenAPI schema from these classes, and the operator parses every object it reconciles with
them. The seed's `config.json` sections are reused from `omnikube.config` (same fields, defaults,
bounds and descriptions), only spelled in camelCase as Kubernetes fields are; `render_config()`
turns a spec back into the seed-format file the worker and gateway read.

Every field carries a description, because `kubectl explain` shows them to the person writing a
spec. Defaults equal the seed's.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from omnikube.config import (
    AudioSection,
    DuplexSection,
    ModelSection,
    OmniConfig,
    RealtimeSection,
    RecordingSection,
    ServiceSection,
)

DEFAULT_IMAGE_TAG = "0.1.0"
DEFAULT_WORKER_IMAGE = f"omnikube/worker:{DEFAULT_IMAGE_TAG}"
DEFAULT_GATEWAY_IMAGE = f"omnikube/gateway:{DEFAULT_IMAGE_TAG}"
GPU_RESOURCE = "nvidia.com/gpu"
MODEL_MOUNT_PATH = "/models"
# Marks a field whose contents the API server keeps unvalidated (only Kubernetes' own big types).
PRESERVE_UNKNOWN = "x-kubernetes-preserve-unknown-fields"

# Fields inherited from `omnikube.config` keep their snake_case Python names; on the wire they
# are camelCase like every Kubernetes field.
_API = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", use_enum_values=True)

# Kubernetes quantities ("2", "500m", "16Gi") and other int-or-string values.
IntOrString = Union[int, str]


class _ApiModel(BaseModel):
    model_config = _API


# --- the seed's config.json, reused -------------------------------------------------------------


class ModelSpec(ModelSection):
    """Which weights every worker loads (config.json `model`)."""

    model_config = _API


class AudioSpec(AudioSection):
    """Voice and playback settings (config.json `audio`)."""

    model_config = _API


class ServiceSpec(ServiceSection):
    """Gateway and worker service settings: ports, queue, timeouts, compile, ETA baselines (config.json `service`)."""

    model_config = _API


class DuplexSpec(DuplexSection):
    """Full-duplex session settings (config.json `duplex`)."""

    model_config = _API


class RecordingSpec(RecordingSection):
    """Session recording settings (config.json `recording`)."""

    model_config = _API


class RealtimeSpec(RealtimeSection):
    """Limits of sessions on the gateway's /v1/realtime (MiniCPM-o Realtime protocol)."""

    model_config = _API


# --- Kubernetes pass-through types ---------------------------------------------------------------


class TolerationOperator(str, Enum):
    Exists = "Exists"
    Equal = "Equal"


class TaintEffect(str, Enum):
    NoSchedule = "NoSchedule"
    PreferNoSchedule = "PreferNoSchedule"
    NoExecute = "NoExecute"


class Toleration(_ApiModel):
    """A Kubernetes toleration, as in a pod spec."""

    key: str | None = Field(None, description="Taint key the toleration applies to; empty with operator Exists matches all taints.")
    operator: TolerationOperator | None = Field(None, description="Exists or Equal (default Equal).")
    value: str | None = Field(None, description="Taint value to match when operator is Equal.")
    effect: TaintEffect | None = Field(None, description="Taint effect to match; empty matches all effects.")
    toleration_seconds: int | None = Field(None, description="How long a NoExecute taint is tolerated before eviction (s).")


class ResourceRequirements(_ApiModel):
    """Compute resources of a container, as in a pod spec."""

    requests: dict[str, IntOrString] | None = Field(None, description="Minimum resources (e.g. cpu: \"4\", memory: 32Gi).")
    limits: dict[str, IntOrString] | None = Field(None, description="Maximum resources. Workers always get nvidia.com/gpu: 1 added.")


class SecretKeyRef(_ApiModel):
    """A key in a Secret of the OmniDeployment's namespace."""

    name: str = Field(..., min_length=1, description="Secret name.")
    key: str = Field(..., min_length=1, description="Key inside the Secret.")


class _Scheduling(_ApiModel):
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="When the kubelet pulls the image."
    )
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements, description="Container resources.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the pods must match.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Taints the pods tolerate.")
    affinity: dict[str, Any] | None = Field(
        None,
        description="Kubernetes affinity (nodeAffinity, podAffinity, podAntiAffinity), passed through to the pods as is.",
        json_schema_extra={PRESERVE_UNKNOWN: True},
    )


# --- cluster settings ----------------------------------------------------------------------------


class AutoscalingSpec(_ApiModel):
    """Workers follow the load the gateway measures: its queue length and the queue wait it
    estimates for each task type (the ETA it tells clients)."""

    enabled: bool = Field(False, description="Let the operator set spec.workers.replicas from the gateway's queue; off: replicas is yours (kubectl scale, an HPA, KEDA).")
    min_replicas: int = Field(1, ge=0, description="Fewest workers, even with no load.")
    max_replicas: int = Field(4, ge=1, description="Most workers (GPUs) the autoscaler asks for; at most spec.workers.maxReplicas.")
    target_queue_wait_seconds: float = Field(
        30.0, gt=0,
        description="Queue wait the gateway may estimate for a queued request before workers are added (one per waiting request not yet covered by a starting worker).",
    )
    scale_up_stabilization_seconds: int = Field(
        0, ge=0, description="Scale up to the smallest size recommended over this window (0: as soon as the target is missed).",
    )
    scale_down_stabilization_seconds: int = Field(
        300, ge=0,
        description="Scale down only to the largest size recommended over this window, so bursty load does not flap workers. Only idle workers are removed; busy ones are drained, never cut.",
    )


class WorkersSpec(_Scheduling):
    """The per-GPU worker pods: each holds one loaded model and serves one session at a time."""

    replicas: int = Field(1, ge=0, description="Number of worker pods; each requests one GPU. The scale subresource sets this.")
    max_replicas: int = Field(
        64, ge=0, description="Cap on replicas: a spec asking for more is reported Degraded and not applied."
    )
    image: str = Field(DEFAULT_WORKER_IMAGE, min_length=1, description="Worker container image.")
    gpu_resource: str = Field(GPU_RESOURCE, min_length=1, description="Extended resource name of one GPU (limit 1 per worker).")
    max_unavailable: int = Field(
        1, ge=1, description="Most worker pods replaced at once when a spec change rolls them (busy workers go last)."
    )
    drain_timeout_seconds: int = Field(
        3600, ge=0,
        description="A busy worker chosen for removal gets no new work and is deleted when its session ends or after this many seconds.",
    )
    termination_grace_period_seconds: int = Field(
        30, ge=0, description="Time a worker gets to finish after SIGTERM: it drains for this less 3 s (in-flight requests, then replay videos being made) and exits by itself."
    )
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec, description="Scale workers on the gateway's queue wait (off by default).")


class ServiceType(str, Enum):
    ClusterIP = "ClusterIP"
    NodePort = "NodePort"
    LoadBalancer = "LoadBalancer"


class GatewaySpec(_Scheduling):
    """The gateway: the one address clients use; it queues requests and routes them to idle workers."""

    replicas: int = Field(1, ge=0, description="Gateway pods (a Deployment).")
    image: str = Field(DEFAULT_GATEWAY_IMAGE, min_length=1, description="Gateway container image.")
    service_type: ServiceType = Field(ServiceType.ClusterIP, description="Type of the gateway Service.")
    node_port: int | None = Field(None, ge=30000, le=32767, description="Fixed node port when serviceType is NodePort or LoadBalancer.")
    http: bool = Field(True, description="Serve plain HTTP (TLS usually ends at an ingress or load balancer).")


class StorageSpec(_ApiModel):
    """The data directory (recordings, reference voices): a PersistentVolumeClaim shared by gateway and workers."""

    enabled: bool = Field(True, description="Create a data PVC shared by gateway and workers; false gives each pod its own emptyDir: the gateway then lists no worker's recordings, and data is lost with its pod.")
    size: str = Field("20Gi", min_length=1, description="Requested size of the data PVC.")
    storage_class_name: str | None = Field(None, description="StorageClass of the data PVC; empty uses the cluster default.")
    access_mode: Literal["ReadWriteOnce", "ReadWriteMany"] = Field(
        "ReadWriteMany", description="Access mode; ReadWriteMany lets workers on several nodes share it."
    )
    existing_claim: str | None = Field(None, description="Use this existing PVC instead of creating one.")


class ModelCacheSource(str, Enum):
    download = "download"
    pvc = "pvc"
    hostPath = "hostPath"
    none = "none"


class DownloadHub(str, Enum):
    huggingface = "huggingface"
    modelscope = "modelscope"


class ModelDownloadSpec(_ApiModel):
    """A Job that downloads the weights once into the cache volume before any worker starts."""

    repo_id: str | None = Field(None, description="Hub repository to download; empty uses model.modelPath.")
    hub: DownloadHub = Field(DownloadHub.huggingface, description="huggingface (with optional endpoint mirror) or modelscope.")
    endpoint: str | None = Field(None, description="Hugging Face endpoint mirror, e.g. https://hf-mirror.com (sets HF_ENDPOINT).")
    revision: str | None = Field(None, description="Branch, tag or commit to download.")
    token_secret: SecretKeyRef | None = Field(None, description="Secret key holding a Hub access token (HF_TOKEN).")
    image: str | None = Field(None, description="Image that runs the download; empty uses workers.image.")
    size: str = Field("40Gi", min_length=1, description="Size of the model cache PVC.")
    storage_class_name: str | None = Field(None, description="StorageClass of the model cache PVC; empty uses the cluster default.")
    access_mode: Literal["ReadWriteOnce", "ReadWriteMany"] = Field(
        "ReadWriteMany", description="Access mode of the model cache PVC; ReadWriteOnce only when all workers share one node."
    )
    backoff_limit: int = Field(3, ge=0, description="Retries of the download Job before it is reported failed.")


class ModelPvcSpec(_ApiModel):
    """An existing PVC that already holds the weights."""

    claim_name: str = Field(..., min_length=1, description="PVC name.")
    sub_path: str | None = Field(None, description="Directory inside the volume that holds the model.")


class ModelHostPathSpec(_ApiModel):
    """A directory on every GPU node that already holds the weights."""

    path: str = Field(..., min_length=1, description="Absolute path on the node.")


class ModelCacheSpec(_ApiModel):
    """Where the workers find the weights, mounted read-only at /models."""

    source: ModelCacheSource = Field(
        ModelCacheSource.download,
        description="download: a Job fills a cache PVC; pvc: an existing claim; hostPath: a node directory; none: each worker loads model.modelPath itself. The simulated backend needs no weights and ignores this.",
    )
    download: ModelDownloadSpec = Field(default_factory=ModelDownloadSpec, description="Settings for source download.")
    pvc: ModelPvcSpec | None = Field(None, description="Settings for source pvc.")
    host_path: ModelHostPathSpec | None = Field(None, description="Settings for source hostPath.")


class MonitoringSpec(_ApiModel):
    """Prometheus integration."""

    service_monitor: bool = Field(True, description="Create a ServiceMonitor for the gateway when the Prometheus Operator is installed.")
    pod_monitor: bool = Field(True, description="Create a PodMonitor for the workers when the Prometheus Operator is installed.")
    interval: str = Field("15s", min_length=1, description="Scrape interval.")
    labels: dict[str, str] = Field(default_factory=dict, description="Extra labels on the monitors (for a Prometheus selector).")


class BackendType(str, Enum):
    minicpmo = "minicpmo"
    simulated = "simulated"


class SimulatedSpec(_ApiModel):
    """Timings of the simulated backend, which stands in for the model without a GPU or weights."""

    load_seconds: float = Field(0.2, ge=0, description="Pretended model load time (s).")
    prefill_ms: float = Field(120.0, ge=0, description="Pretended prefill time of every turn (ms).")
    tokens_per_second: float = Field(25.0, ge=0, description="Pretended text token rate; 0 means no delay.")
    duplex_step_ms: float = Field(120.0, ge=0, description="Pretended compute time of one duplex step (ms).")


class BackendSpec(_ApiModel):
    """What the workers run."""

    type: BackendType = Field(BackendType.minicpmo, description="minicpmo: the real model on a GPU; simulated: a stand-in that says so in every answer.")
    simulated: SimulatedSpec = Field(default_factory=SimulatedSpec, description="Settings for type simulated.")


class AuthSpec(_ApiModel):
    """Client authentication at the gateway."""

    api_key_secret: SecretKeyRef | None = Field(None, description="Secret key holding the API key clients must send; empty disables auth.")


class OmniDeploymentSpec(_ApiModel):
    """Desired state of one Omnikube service: the seed's config.json plus what a cluster needs."""

    model: ModelSpec = Field(default_factory=ModelSpec, description="Model weights and attention backend.")
    audio: AudioSpec = Field(default_factory=AudioSpec, description="Voice and playback settings.")
    service: ServiceSpec = Field(default_factory=ServiceSpec, description="Ports, queue, timeouts, compile and ETA settings.")
    duplex: DuplexSpec = Field(default_factory=DuplexSpec, description="Full-duplex session settings.")
    recording: RecordingSpec = Field(default_factory=RecordingSpec, description="Session recording settings.")
    realtime: RealtimeSpec = Field(default_factory=RealtimeSpec, description="Limits of /v1/realtime sessions.")
    backend: BackendSpec = Field(default_factory=BackendSpec, description="Real model or simulated stand-in.")
    workers: WorkersSpec = Field(default_factory=WorkersSpec, description="Per-GPU worker pods.")
    gateway: GatewaySpec = Field(default_factory=GatewaySpec, description="The gateway Deployment and Service.")
    storage: StorageSpec = Field(default_factory=StorageSpec, description="The data directory volume.")
    model_cache: ModelCacheSpec = Field(default_factory=ModelCacheSpec, description="Where workers find the weights.")
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec, description="Prometheus ServiceMonitor and PodMonitor.")
    auth: AuthSpec = Field(default_factory=AuthSpec, description="Client authentication at the gateway.")


# --- status --------------------------------------------------------------------------------------


class ConditionStatus(str, Enum):
    true = "True"
    false = "False"
    unknown = "Unknown"


class Condition(_ApiModel):
    """A Kubernetes-style condition."""

    type: str = Field(..., description="Ready, Progressing or Degraded.")
    status: ConditionStatus = Field(..., description="True, False or Unknown.")
    reason: str = Field("", description="CamelCase reason a program can match.")
    message: str = Field("", description="What is going on and what to do about it.")
    last_transition_time: str | None = Field(None, description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(None, description="The spec generation this condition describes.")


class Phase(str, Enum):
    Pending = "Pending"
    Progressing = "Progressing"
    Ready = "Ready"
    Degraded = "Degraded"


class WorkerSummary(_ApiModel):
    """One worker pod as the operator last saw it."""

    name: str = Field(..., description="Pod name.")
    index: int = Field(..., description="Worker index (its GPU slot).")
    phase: str = Field("", description="Pod phase.")
    ready: bool = Field(False, description="Pod passed its readiness probe.")
    worker_status: str | None = Field(None, description="worker_status from the worker's /health (idle, busy_chat, duplex_active, ...).")
    draining: bool = Field(False, description="Marked for removal: gets no new work.")
    outdated: bool = Field(False, description="Runs an older pod template and will be replaced.")
    message: str = Field("", description="Why the pod is not ready, when it is not.")


class AutoscalingStatus(_ApiModel):
    """What the autoscaler saw and decided on its last look."""

    desired_replicas: int | None = Field(None, description="Workers the autoscaler wants now (within its bounds).")
    queue_length: int | None = Field(None, description="Requests waiting across the gateway replicas.")
    queue_wait_seconds: float | None = Field(None, description="Longest queue wait the gateway estimates for a new request (max over task types).")
    busy_workers: int | None = Field(None, description="Workers whose /health says they hold a session.")
    decision: str = Field("", description="ScaleUp, ScaleDown, Hold, or Clamped (replicas outside the bounds were brought inside).")
    reason: str = Field("", description="Why, in words.")
    last_scale_time: str | None = Field(None, description="When the autoscaler last changed spec.workers.replicas (RFC 3339).")


class OmniDeploymentStatus(_ApiModel):
    """Observed state, written by the operator."""

    observed_generation: int | None = Field(None, description="The spec generation last reconciled.")
    phase: Phase | None = Field(None, description="Pending, Progressing, Ready or Degraded.")
    conditions: list[Condition] = Field(default_factory=list, description="Ready, Progressing and Degraded conditions.")
    desired_workers: int = Field(0, description="Worker pods the spec asks for.")
    ready_workers: int = Field(0, description="Worker pods passing readiness.")
    replicas: int = Field(0, description="Worker pods that exist (the scale subresource's status).")
    ready: str = Field("0/0", description="readyWorkers/desiredWorkers, for the printer column.")
    selector: str = Field("", description="Label selector of the worker pods (for the scale subresource and HPA).")
    workers: list[WorkerSummary] = Field(default_factory=list, description="Per-worker summary.")
    gateway_endpoint: str | None = Field(None, description="Address clients use (Service DNS name and port).")
    queue_length: int | None = Field(None, description="Requests waiting in the gateway queue.")
    notes: list[str] = Field(default_factory=list, description="Things the operator skipped on purpose (e.g. no Prometheus Operator).")
    autoscaling: AutoscalingStatus | None = Field(None, description="The autoscaler's last look, while spec.workers.autoscaling.enabled.")


def render_config(spec: OmniDeploymentSpec, model_path: str | None = None) -> OmniConfig:
    """The seed-format config.json for one spec; `model_path` overrides where the weights are."""
    config = OmniConfig(
        model=spec.model.model_dump(),
        audio=spec.audio.model_dump(),
        service=spec.service.model_dump(),
        duplex=spec.duplex.model_dump(),
        recording=spec.recording.model_dump(),
        realtime=spec.realtime.model_dump(),
    )
    if model_path is not None:
        config.model.model_path = model_path
    return config
