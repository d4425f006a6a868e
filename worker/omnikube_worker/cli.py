"""`omnikube-worker`: start one worker, as the seed's `worker.py` is started, plus `--backend`.

Precedence: CLI > config.json (`--config`, `OMNIKUBE_CONFIG`, or ./config.json) > defaults.
Unlike the original, 0 is a real value (`--port 0` is rejected by argparse ranges instead of
silently falling back). The port is `service.worker_base_port + --worker-index` unless `--port`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from omnikube.config import ConfigError, load_config
from omnikube.protocol import WS_MAX_MESSAGE_BYTES

from .settings import SimOptions, WorkerSettings

LOAD_FAILURE_EXIT_CODE = 3
TERMINATION_MESSAGE_BYTES = 4096


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="omnikube-worker", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="config.json path (default: $OMNIKUBE_CONFIG or ./config.json)")
    p.add_argument("--backend", choices=["minicpmo", "simulated"], default=None,
                   help="minicpmo = the real model on a GPU; simulated = no GPU (default: $OMNIKUBE_WORKER_BACKEND or minicpmo)")
    p.add_argument("--model-path", help="HF-format model directory or Hub id (model.model_path)")
    p.add_argument("--device", default=None, help="auto (GPU if torch sees one, else CPU), cpu, cuda or cuda:N (model.device)")
    p.add_argument("--pt-path", help="extra .pt weights applied after loading (model.pt_path)")
    p.add_argument("--ref-audio-path", help="default reference voice WAV (audio.ref_audio_path)")
    p.add_argument("--worker-index", type=int, default=None, help="worker index: port = base port + index (default 0)")
    p.add_argument("--gpu-id", type=int, default=None, help="GPU id reported in /health (default: the worker index)")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model (service.compile)")
    p.add_argument("--chat-cache", choices=["dynamic", "static"], default=None,
                   help="chat replies' KV cache; static compiles each decoding step on a GPU (model.chat_cache)")
    p.add_argument("--port", type=int, default=None, help="listen port (default: service.worker_base_port + index)")
    p.add_argument("--host", default=None, help="bind address (default 0.0.0.0)")
    p.add_argument("--duplex-pause-timeout", type=float, default=None, help="seconds a duplex session may stay paused")
    p.add_argument("--drain-seconds", type=float, default=None,
                   help="after SIGTERM, the most seconds in-flight requests and replay videos get before the worker "
                        "exits (default: no bound); the operator sets it from the pod's termination grace period")
    p.add_argument("--termination-log", type=Path, default=None,
                   help="file that gets the reason when the model load fails (the operator gives Kubernetes' "
                        "/dev/termination-log, so the pod's status and the OmniDeployment's say why)")
    p.add_argument("--log-level", default="info")
    sim = p.add_argument_group("simulated backend (also OMNIKUBE_SIM_* environment variables)")
    sim.add_argument("--sim-load-s", type=float, default=None, help="simulated model load time")
    sim.add_argument("--sim-prefill-ms", type=float, default=None, help="prefill delay per turn / prepare")
    sim.add_argument("--sim-tokens-per-s", type=float, default=None, help="text tokens per second (0 = unlimited)")
    sim.add_argument("--sim-words-per-chunk", type=int, default=None, help="tokens per streamed chunk")
    sim.add_argument("--sim-duplex-step-ms", type=float, default=None, help="compute time per duplex chunk")
    sim.add_argument("--sim-finalize-ms", type=float, default=None, help="deferred finalize per duplex step")
    sim.add_argument("--sim-fault", default=None, help="e.g. crash_after_chunks:3, hang_after_chunks:1, error_after_chunks:0, slow:4, load_error")
    sim.add_argument("--sim-zero-delay", action="store_true", help="no simulated delays at all (benchmarks)")
    return p


def settings_from_args(args: argparse.Namespace) -> WorkerSettings:
    config = load_config(args.config, overrides={
        "model.model_path": args.model_path, "model.pt_path": args.pt_path, "model.device": args.device,
        "model.chat_cache": args.chat_cache,
        "audio.ref_audio_path": args.ref_audio_path, "service.compile": args.compile,
        "duplex.pause_timeout": args.duplex_pause_timeout,
    })
    sim_overrides = {"load_s": args.sim_load_s, "prefill_ms": args.sim_prefill_ms, "tokens_per_s": args.sim_tokens_per_s,
                     "words_per_chunk": args.sim_words_per_chunk, "duplex_step_ms": args.sim_duplex_step_ms,
                     "finalize_ms": args.sim_finalize_ms, "fault": args.sim_fault}
    env = dict(os.environ)
    if args.sim_zero_delay:
        env["OMNIKUBE_SIM_ZERO_DELAY"] = "1"
    settings = WorkerSettings.from_config(
        config,
        backend=args.backend or os.environ.get("OMNIKUBE_WORKER_BACKEND") or "minicpmo",
        worker_index=args.worker_index, port=args.port, host=args.host,
        gpu_id=args.gpu_id if args.gpu_id is not None else args.worker_index,
        sim=SimOptions.from_env(env, **sim_overrides),
    )
    return settings


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = settings_from_args(args)
    except (ConfigError, ValueError) as exc:
        print(f"omnikube-worker: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    from .app import create_app
    from .draining import DrainingServer

    failures: list[BaseException] = []
    server: uvicorn.Server | None = None

    def stop_on_load_failure(exc: BaseException) -> None:
        failures.append(exc)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_load_failure=stop_on_load_failure)
    server = DrainingServer(uvicorn.Config(app, host=settings.host, port=settings.port, ws_max_size=WS_MAX_MESSAGE_BYTES,
                                           # Audio and video frames barely compress: deflate would cost
                                           # ~5 ms per 85 kB chunk for nothing (the gateway turns it off too).
                                           ws_per_message_deflate=False, log_level=args.log_level.lower(), lifespan="on",
                                           timeout_graceful_shutdown=args.drain_seconds), args.drain_seconds)
    logging.getLogger("omnikube.worker").info("worker %d (%s backend) on %s:%d", settings.worker_index,
                                               settings.backend, settings.host, settings.port)
    server.run()
    if not failures:
        return 0
    if args.termination_log is not None:
        write_termination_message(args.termination_log, failures[0])
    return LOAD_FAILURE_EXIT_CODE


def write_termination_message(path: Path, exc: BaseException) -> None:
    """The load failure's one-line reason, where the kubelet reads it (it keeps at most 4096 bytes)."""
    message = f"model load failed: {type(exc).__name__}: {exc}".replace("\n", " ")
    try:
        path.write_text(message.encode()[:TERMINATION_MESSAGE_BYTES].decode("utf-8", "ignore"))
    except OSError as write_error:
        logging.getLogger("omnikube.worker").warning("could not write the termination message to %s: %s", path, write_error)


if __name__ == "__main__":
    sys.exit(main())
