"""`omnikube-gateway`: the seed's gateway flags plus discovery, data, auth and config options.

Precedence: CLI > config.json (`--config`, `$OMNIKUBE_CONFIG`, else ./config.json) > defaults;
unlike the original, 0 given on the command line is a real value. Exit status is non-zero, with a
one-line reason, for a bad config, a bad `--workers` entry, a missing key file or TLS file.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

from omnikube.config import ConfigError, load_config
from omnikube.protocol import WS_MAX_MESSAGE_BYTES

from . import tls
from .settings import GatewaySettings, parse_workers, StaticWorker

if TYPE_CHECKING:
    from .client_session import SessionTracker

log = logging.getLogger("omnikube_gateway")
STOP_SESSIONS_TIMEOUT_S = 5.0  # each session needs one frame and a worker `close`; the pod's grace is longer


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="omnikube-gateway", description="Omnikube gateway: queue, proxy and API in front of MiniCPM-o workers.")
    p.add_argument("--config", help="config.json path (default: $OMNIKUBE_CONFIG or ./config.json)")
    p.add_argument("--host", default="0.0.0.0", help="bind address (default 0.0.0.0)")
    p.add_argument("--port", type=int, help="listen port (default service.gateway_port, 8006)")
    workers = p.add_argument_group("workers (choose one source)")
    workers.add_argument("--workers", help="static list host:port,host:port")
    workers.add_argument("--num-workers", type=int, help="static list localhost:<worker_base_port + i> for i < N")
    workers.add_argument("--deployment", help="discover the worker pods of this OmniDeployment")
    workers.add_argument("--selector", help="discover worker pods by this label selector instead")
    workers.add_argument("--namespace", help="namespace of the worker pods (default: the pod's own, else kubeconfig's, else default)")
    workers.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster service account, $KUBECONFIG, ~/.kube/config)")
    p.add_argument("--max-queue-size", type=int, help="queue capacity (default service.max_queue_size)")
    p.add_argument("--timeout", type=float, help="request_timeout in seconds, also the longest queue wait")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--https", dest="https", action="store_true", default=True, help="serve HTTPS (default)")
    mode.add_argument("--http", dest="https", action="store_false", help="serve plain HTTP")
    p.add_argument("--ssl-certfile", help="TLS certificate (default: generated self-signed under <data-dir>/certs)")
    p.add_argument("--ssl-keyfile", help="TLS private key")
    p.add_argument("--lang", choices=["zh", "en"], help="default UI language in /api/frontend_defaults")
    p.add_argument("--data-dir", help="recordings, reference audio and gateway state (default service.data_dir)")
    p.add_argument("--presets-dir", help="preset folders, <mode>/*.yaml (default: the presets shipped with the gateway)")
    p.add_argument("--api-keys-file", help="file with one API key per line; enables auth on the public API")
    p.add_argument("--admin-keys-file", help="file with one admin key per line; protects the admin API")
    p.add_argument("--health-interval", type=float, help="seconds between /health probes of a healthy worker (default 5)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def settings_from_args(args: argparse.Namespace) -> GatewaySettings:
    overrides = {
        "service.gateway_port": args.port,
        "service.max_queue_size": args.max_queue_size,
        "service.request_timeout": args.timeout,
        "service.data_dir": args.data_dir,
    }
    config = load_config(args.config, overrides)
    service = config.service
    if sum(bool(x) for x in (args.workers, args.num_workers, args.deployment or args.selector)) > 1:
        raise ValueError("choose one worker source: --workers, --num-workers, or --deployment/--selector")
    static: list[StaticWorker] = []
    if args.workers:
        static = parse_workers(args.workers, service.worker_base_port)
    elif args.num_workers is not None:
        static = [StaticWorker("localhost", service.worker_base_port + i) for i in range(args.num_workers)]
    elif not (args.deployment or args.selector):
        static = [StaticWorker("localhost", service.worker_base_port)]
    return GatewaySettings(
        config=config, host=args.host, port=service.gateway_port, static_workers=static,
        namespace=args.namespace, deployment=args.deployment, selector=args.selector, kubeconfig=args.kubeconfig,
        max_queue_size=service.max_queue_size, request_timeout=service.request_timeout,
        https=args.https, ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile,
        data_dir=Path(service.data_dir), api_keys_file=args.api_keys_file, admin_keys_file=args.admin_keys_file, lang=args.lang,
        **({"health_interval_s": args.health_interval} if args.health_interval else {}),
        **({"presets_dir": Path(args.presets_dir)} if args.presets_dir else {}),
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore"):  # at info, httpx logs every proxied request and probe
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        settings = settings_from_args(args)
        ssl_files: tuple[str, str] | tuple[None, None] = (None, None)
        if settings.https:
            ssl_files = tls.resolve(settings.ssl_certfile, settings.ssl_keyfile, settings.data_dir)
        else:
            log.warning("serving plain HTTP: browsers allow microphone and camera only on https:// or localhost")
    except (ConfigError, ValueError, tls.TLSConfigError) as exc:
        print(f"omnikube-gateway: {exc}", file=sys.stderr)
        return 2
    from .app import create_app  # after argument errors, so --help stays fast
    from .http_server import protocol_for

    scheme = "https" if settings.https else "http"
    log.info("gateway on %s://%s:%d", scheme, settings.host, settings.port)
    app = create_app(settings)
    GatewayServer(uvicorn.Config(
        app, http=protocol_for(app), host=settings.host, port=settings.port, ssl_certfile=ssl_files[0], ssl_keyfile=ssl_files[1],
        ws_max_size=WS_MAX_MESSAGE_BYTES, ws_per_message_deflate=False, log_level=args.log_level, access_log=False,
    ), app.state.sessions).run()
    return 0


class GatewayServer(uvicorn.Server):
    """uvicorn, except that on SIGTERM the live sessions are ended with an error frame first: uvicorn
    itself cuts every WebSocket with a bare 1012 before the application hears of the shutdown."""

    def __init__(self, config: uvicorn.Config, sessions: "SessionTracker") -> None:
        super().__init__(config)
        self.sessions = sessions

    async def shutdown(self, sockets: list | None = None) -> None:
        for server in self.servers:
            server.close()  # no new connections while the live ones are told
        try:
            ended = await asyncio.wait_for(self.sessions.stop_all(), STOP_SESSIONS_TIMEOUT_S)
            log.info("ended %d live sessions before stopping", ended)
        except asyncio.TimeoutError:
            log.warning("live sessions did not end within %g s", STOP_SESSIONS_TIMEOUT_S)
        await super().shutdown(sockets)


if __name__ == "__main__":
    sys.exit(main())
