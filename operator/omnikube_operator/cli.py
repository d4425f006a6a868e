"""`omnikube-operator`: run the OmniDeployment operator (kopf) with a liveness endpoint and a
Prometheus metrics port.

    omnikube-operator --all-namespaces
    omnikube-operator --namespace team-a --namespace team-b --metrics-port 8080

Inside a cluster it uses the pod's service account; outside, $KUBECONFIG (or ~/.kube/config).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

import kopf
from kubernetes import config as kube_config
from kubernetes.config.config_exception import ConfigException
from prometheus_client import start_http_server

from . import handlers, leadership
from .kube import Kube
from .reconcile import Reconciler


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="omnikube-operator", description="Reconcile OmniDeployments into workers and a gateway.")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", default=[], help="watch this namespace (repeatable)")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace (the default)")
    parser.add_argument("--liveness-port", type=int, default=8081, help="kopf liveness endpoint /healthz (0: off)")
    parser.add_argument("--metrics-port", type=int, default=8080, help="Prometheus metrics (0: off)")
    parser.add_argument("--bind", default="0.0.0.0", help="address of the liveness and metrics endpoints")
    parser.add_argument("--resync-seconds", type=float, default=float(os.environ.get("OMNIKUBE_RESYNC_SECONDS", 10)),
                        help="the periodic look (workers' health, the gateway's queue, autoscaling, status) this often per OmniDeployment")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then $KUBECONFIG)")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--standalone", action="store_true",
                        help="no leader election (kopf peering): only when one operator can ever run")
    return parser.parse_args(argv)


def load_kube_config(path: str | None) -> None:
    if path:
        kube_config.load_kube_config(config_file=path)
        return
    try:
        kube_config.load_incluster_config()
    except ConfigException:
        kube_config.load_kube_config()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_level.lower() != "debug":
        # One line per handler call and per health probe would drown the operator's own story.
        for chatty in ("kopf.objects", "httpx", "urllib3.connectionpool"):
            logging.getLogger(chatty).setLevel(logging.WARNING)
    load_kube_config(args.kubeconfig)
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig  # kopf logs in through the same file
    kube = Kube()
    if not args.standalone:
        leadership.ensure_peering_objects(kube, args.namespace)
    handlers.RUNTIME.reconciler = Reconciler(kube)
    handlers.register(args.resync_seconds)
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.bind)
    liveness = f"http://{args.bind}:{args.liveness_port}/healthz" if args.liveness_port else None
    asyncio.run(kopf.operator(
        standalone=args.standalone,
        peering_name=None if args.standalone else leadership.PEERING_NAME,
        priority=leadership.start_priority(),
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=liveness,
    ))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
