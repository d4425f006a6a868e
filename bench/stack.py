"""Start the pieces under test on loopback: a farm of simulated workers and the real gateway.

The gateway is started by the test fixtures' own launcher (`tests/fixtures/processes.py`): static
mode (`--workers`), plain HTTP, its data under the benchmark's log folder.
"""

from __future__ import annotations

import sys
from typing import Mapping, Sequence

import httpx

from tests.fixtures.processes import GatewayProc, launch_gateway

from .procs import Managed, ProcessGroup, wait_until

ZERO_DELAY = {"OMNIKUBE_SIM_ZERO_DELAY": "1"}


def start_workers(group: ProcessGroup, ports: Sequence[int], sim_env: Mapping[str, str],
                  name: str = "workers", timeout: float = 120.0) -> Managed:
    """One process serving one simulated worker per port; returns once every one reports idle."""
    proc = group.start(name, [sys.executable, "-m", "bench.worker_farm", "--ports", ",".join(map(str, ports))],
                       env=dict(sim_env))
    pending = list(ports)

    def all_idle() -> bool:
        if not proc.alive():
            raise RuntimeError(f"{name} exited ({proc.popen.returncode}):\n{proc.log_tail()}")
        while pending:
            response = httpx.get(f"http://127.0.0.1:{pending[0]}/health", timeout=2.0)
            if response.json().get("worker_status") != "idle":
                return False
            pending.pop(0)
        return True

    wait_until(all_idle, timeout, f"{len(ports)} simulated workers idle", interval=0.2)
    return proc


def gateway_workers(port: int) -> list[dict]:
    return httpx.get(f"http://127.0.0.1:{port}/workers", timeout=5.0).json().get("workers", [])


def start_gateway(group: ProcessGroup, worker_ports: Sequence[int], config: dict | None = None,
                  timeout: float = 120.0, strict: bool = True) -> GatewayProc:
    """The real gateway (the test fixtures' launcher, `--log-level warning`) in front of
    `worker_ports`; returns once it reports every worker idle. With `strict=False` it goes on after
    `timeout` even if some workers still look offline to the gateway (`gateway.idle_at_start` says
    how many were idle), so that a gateway that cannot keep hundreds of workers healthy is measured
    as it is instead of not at all."""
    gateway = group.adopt(launch_gateway(group.log_dir.resolve(), [f"127.0.0.1:{p}" for p in worker_ports],
                                         config=config or {}))
    idle = {"count": 0}

    def all_idle() -> bool:
        if not gateway.alive():
            raise RuntimeError(f"gateway exited ({gateway.process.returncode}):\n{gateway.log()[-2000:]}")
        workers = gateway_workers(gateway.port)
        idle["count"] = sum(1 for w in workers if w.get("status") == "idle")
        return len(workers) == len(worker_ports) and idle["count"] == len(worker_ports)

    try:
        wait_until(all_idle, timeout, f"gateway sees {len(worker_ports)} idle workers", interval=0.2)
    except TimeoutError:
        if strict:
            raise
    gateway.idle_at_start = idle["count"]  # type: ignore[attr-defined]
    return gateway
