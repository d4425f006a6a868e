"""Names of the metrics one part exports and another reads (the gateway's queue, read by the
operator's autoscaler and by HPA/KEDA examples in the chart): declared once, imported by both."""

from __future__ import annotations

GATEWAY_QUEUE_LENGTH = "omnikube_gateway_queue_length"
GATEWAY_ETA_SECONDS = "omnikube_gateway_eta_seconds"  # label task_type: wait a new request would have now
