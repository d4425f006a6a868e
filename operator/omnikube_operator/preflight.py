"""Proof before replacement: a spec that would replace pods is tried out before any pod goes.

Some mistakes pass the CRD schema and show only when a pod is made from the spec: an image
reference the kubelet cannot parse (a pod stuck in InvalidImageName), a resource quantity the API
server refuses (`memory: lots`), a field the pod API rejects. Left to the rollout, each one cost a
healthy worker: the old pod was deleted first, then its replacement failed. Here the new worker pod
is created in a server-side dry run (`dryRun=All`: validation and admission, nothing stored) and
the gateway Deployment is applied the same way; the images are parsed with the container
reference grammar, since the API server accepts any string there. If anything fails, reconcile
applies nothing and the Degraded condition says what to fix. A template that passed is remembered
(per OmniDeployment and template), so the dry run costs one request per spec change, not per pass.
"""

from __future__ import annotations

import re
from typing import Callable

from kubernetes.client.exceptions import ApiException

from . import gateway, pods
from .context import Owner, short_hash
from .kube import Kube, api_message
from .validation import Problem

# The reference grammar of container images (github.com/distribution/reference): optional
# registry host[:port], lowercase path components, optional :tag, optional @digest.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_REFERENCE = re.compile(rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::{_TAG})?(?:@{_DIGEST})?$")
MAX_LENGTH = 512  # 255 for the name, plus tag and digest
# Refusals that mean "this spec cannot work"; anything else (outage, throttling) is a plain API error.
_INVALID_STATUSES = (400, 403, 422)

_verified: set[tuple[str, str]] = set()


def image_problem(image: str, field: str) -> Problem | None:
    if IMAGE_REFERENCE.match(image) and len(image) <= MAX_LENGTH:
        return None
    return Problem("InvalidImage", f"{field} {image!r} is not a valid image reference (lowercase "
                   "[registry/]path[:tag][@digest], e.g. registry.example.com/omnikube/worker:0.1.0)", permanent=True)


def _refused(attempt: Callable[[], object], reason: str, what: str, fix: str) -> Problem | None:
    try:
        attempt()
    except ApiException as exc:
        if exc.status not in _INVALID_STATUSES:
            raise
        # 400/422: the object itself is invalid, only an edit helps; 403 (admission, a quota) may
        # pass once the namespace's policy or quota changes, so that one is retried.
        return Problem(reason, f"{what} built from this spec is refused by the API server ({api_message(exc)}); fix {fix}",
                       permanent=exc.status != 403)
    return None


def _dry_runs(kube: Kube, owner: Owner) -> list[Problem | None]:
    pod = pods.build_worker_pod(owner, 0)
    # Under a name of its own: the real worker-0 may exist, and a dry run still checks names.
    pod["metadata"].pop("name")
    pod["metadata"]["generateName"] = f"{owner.name}-worker-preflight-"
    deployment = gateway.build_gateway_deployment(owner)
    return [_refused(lambda: kube.create(pod, dry_run=True), "WorkerPodRejected", "a worker pod", "spec.workers"),
            _refused(lambda: kube.apply(deployment, dry_run=True), "GatewayRejected", "the gateway Deployment", "spec.gateway")]


def check(kube: Kube, owner: Owner) -> list[Problem]:
    """Why pods built from this spec would fail (empty: they can be made; then nothing is asked
    again until the spec changes)."""
    key = (owner.uid, short_hash({"workers": pods.template_hash(owner), "gateway": gateway.build_gateway_deployment(owner)}))
    if key in _verified:
        return []
    spec = owner.spec
    problems = [p for p in (image_problem(spec.workers.image, "spec.workers.image"),
                            image_problem(spec.gateway.image, "spec.gateway.image")) if p]
    if not problems:
        problems = [p for p in _dry_runs(kube, owner) if p]
    if not problems:
        _verified.add(key)
    return problems
