"""The operator's own Prometheus metrics (served by `omnikube-operator --metrics-port`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES_TOTAL = Counter(
    "omnikube_operator_reconciles_total", "Reconcile passes by outcome.", ["result"],
)
RECONCILE_ERRORS_TOTAL = Counter(
    "omnikube_operator_reconcile_errors_total", "Reconcile steps that failed, by step.", ["step"],
)
RECONCILE_DURATION_SECONDS = Histogram(
    "omnikube_operator_reconcile_duration_seconds", "Time one reconcile pass took.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ACTIONS_TOTAL = Counter(
    "omnikube_operator_actions_total", "Changes made to the cluster, by action.", ["action"],
)
AUTOSCALER_DESIRED = Gauge(
    "omnikube_operator_autoscaler_desired_replicas", "Workers the autoscaler wants, per OmniDeployment.",
    ["namespace", "deployment"],
)
AUTOSCALER_QUEUE_WAIT = Gauge(
    "omnikube_operator_autoscaler_queue_wait_seconds", "Longest queue wait the gateway estimated at the last look.",
    ["namespace", "deployment"],
)
AUTOSCALER_DECISIONS = Counter(
    "omnikube_operator_autoscaler_decisions_total", "Times the autoscaler changed replicas, by decision.", ["decision"],
)
MANAGED_DEPLOYMENTS = Gauge(
    "omnikube_operator_managed_deployments", "OmniDeployments this operator is reconciling.",
)

for _result in ("ok", "degraded", "error"):
    RECONCILES_TOTAL.labels(_result)
for _action in ("create", "update", "delete", "drain", "undrain"):
    ACTIONS_TOTAL.labels(_action)
for _decision in ("ScaleUp", "ScaleDown", "Clamped"):
    AUTOSCALER_DECISIONS.labels(_decision)
