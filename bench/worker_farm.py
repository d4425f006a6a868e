"""Many simulated workers in one process: `python -m bench.worker_farm --ports P1,P2,...`.

Each port serves its own instance of the real worker app (`omnikube_worker`'s app factory with the
simulated backend), so each keeps the real one-session-at-a-time admission and protocol; only the
Python process is shared. 500 duplex sessions need 500 workers, and 500 worker processes do not fit
on a 2-core machine. Timings come from the `OMNIKUBE_SIM_*` environment (e.g.
`OMNIKUBE_SIM_ZERO_DELAY=1`). Servers tick once a second instead of uvicorn's ten times, so that
hundreds of idle servers do not eat the CPU the benchmark measures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

import uvicorn

WS_MAX_SIZE = 128 * 1024 * 1024


class _FarmServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # the farm handles signals once, for every server
        yield

    async def main_loop(self) -> None:
        while not await self.on_tick(0):
            await asyncio.sleep(1.0)


def build_app(index: int, port: int):
    from omnikube_worker.app import create_app
    from omnikube_worker.settings import SimOptions, WorkerSettings

    settings = WorkerSettings(backend="simulated", worker_index=index, gpu_id=index, host="127.0.0.1",
                              port=port, sim=SimOptions.from_env())
    return create_app(settings)


async def serve(ports: list[int]) -> None:
    servers = []
    for index, port in enumerate(ports):
        config = uvicorn.Config(build_app(index, port), host="127.0.0.1", port=port, log_level="warning",
                                access_log=False, ws_max_size=WS_MAX_SIZE, backlog=4096)
        servers.append(_FarmServer(config))

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    await asyncio.gather(*(server.serve() for server in servers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ports", required=True, help="comma-separated ports, one worker each")
    args = parser.parse_args()
    ports = [int(p) for p in args.ports.split(",") if p]
    try:
        import uvloop
        uvloop.run(serve(ports))
    except ImportError:
        asyncio.run(serve(ports))


if __name__ == "__main__":
    main()
