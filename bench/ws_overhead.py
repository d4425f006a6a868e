"""Benchmark 2: what the gateway adds to each full-duplex message, from 1 to 500 sessions.

Audio full-duplex sessions (`adx_` ids) send one `audio_chunk` per second, each 1 s of 16 kHz
float32 mono audio in base64 (about 85 kB of JSON, worker-api.md §5), and time each chunk until
its `result`. The simulated workers answer at once (zero delay), one worker per session, all in
one farm process (`bench/worker_farm.py`: the real worker app, once per port). The same sessions
run straight to the workers and through a fresh gateway that has exactly that many workers; the
load generator is a separate process (`bench/ws_client.py`). Gateway CPU (1.0 = one core) and RSS
are read from /proc over the measurement window.
"""

from __future__ import annotations

import json
import queue
import resource
import subprocess
import sys
import threading
from pathlib import Path

from .context import Context
from .ws_client import OPEN_TIMEOUT_S
from .procs import CpuMeter, ProcessGroup, free_ports
from .report import Section, Table, Target
from .stack import ZERO_DELAY, start_gateway, start_workers
from .stats import fmt, percentile

KEY = "ws"
TITLE = "2. WebSocket overhead"
TARGETS = ["200 duplex sessions on 2 cores with added p99 < 10 ms"]
OPEN_CONCURRENCY = 100


def raise_fd_limit() -> None:
    """Hundreds of sessions need thousands of sockets across client, gateway and workers."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def drive(urls: list[str], warmup: float, duration: float, log_dir: Path, name: str,
          meter_pids: dict[str, int]) -> dict:
    """Run the load generator over `urls`; measure the CPU (and RSS) of `meter_pids` inside its
    window: `result["cpu"][name]` in cores, `result["rss"][name]` in bytes."""
    urls_file = log_dir / f"{name}.urls"
    urls_file.write_text("\n".join(urls) + "\n")
    argv = [sys.executable, "-m", "bench.ws_client", "--urls", str(urls_file), "--warmup", str(warmup),
            "--duration", str(duration), "--open-concurrency", str(OPEN_CONCURRENCY)]
    with open(log_dir / f"{name}.client.log", "wb") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True, cwd=str(Path(__file__).parent.parent))
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in proc.stdout:
            lines.put(line.strip())
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    meters: dict[str, CpuMeter] = {}
    result: dict = {}
    # The longest gap between two lines: opening every session (in waves of OPEN_CONCURRENCY, each
    # bounded by OPEN_TIMEOUT_S), then the window.
    deadline = 60 + warmup + duration + OPEN_TIMEOUT_S * -(-len(urls) // OPEN_CONCURRENCY)
    try:
        while True:
            line = lines.get(timeout=deadline)
            if line is None:
                break
            if line == "measuring":
                meters = {name: CpuMeter(pid) for name, pid in meter_pids.items()}
            elif line == "done":
                stopped = {name: meter.stop() for name, meter in meters.items()}
                result["cpu"] = {name: cpu for name, (cpu, _) in stopped.items()}
                result["rss"] = {name: rss for name, (_, rss) in stopped.items()}
            elif line.startswith("RESULT "):
                result.update(json.loads(line[len("RESULT "):]))
        proc.wait(30)
    except queue.Empty:
        proc.kill()
        raise TimeoutError(f"ws load generator for {name} gave no answer in {deadline:.0f} s")
    if "latencies_ms" not in result:
        raise RuntimeError(f"ws load generator for {name} failed (exit {proc.returncode}); see {log_dir}")
    (log_dir / f"{name}.result.json").write_text(json.dumps(result))
    return result


def run(ctx: Context) -> Section:
    raise_fd_limit()
    levels = [1, 50] if ctx.quick else [1, 50, 200, 500]
    warmup, duration = (2.0, 5.0) if ctx.quick else (3.0, 10.0)
    log_dir = ctx.dir("ws")
    results: dict[tuple[str, int], dict] = {}
    failures: dict[int, str] = {}
    with ProcessGroup(log_dir) as group:
        worker_ports = free_ports(max(levels))
        farm = start_workers(group, worker_ports, ZERO_DELAY)
        for level in levels:
            try:
                results.update(run_level(group, worker_ports[:level], warmup, duration, log_dir, farm.pid))
            except (RuntimeError, TimeoutError) as exc:
                failures[level] = f"{type(exc).__name__}: {exc}"
    return _section(results, failures, levels, warmup, duration)


def run_level(group: ProcessGroup, ports: list[int], warmup: float, duration: float, log_dir: Path,
              workers_pid: int) -> dict:
    """The same sessions straight to the workers, then through a fresh gateway with exactly these workers."""
    level = len(ports)
    results = {}
    direct = [f"ws://127.0.0.1:{p}/ws/duplex?session_id=adx_bench{i}" for i, p in enumerate(ports)]
    results[("direct", level)] = drive(direct, warmup, duration, log_dir, f"direct-{level}", {"workers": workers_pid})
    gateway = start_gateway(group, ports, timeout=60, strict=False)
    try:
        via = [f"{gateway.ws_url}/ws/duplex/adx_bench{i}" for i in range(level)]
        results[("gateway", level)] = drive(via, warmup, duration, log_dir, f"gateway-{level}",
                                            {"workers": workers_pid, "gateway": gateway.pid})
        results[("gateway", level)]["idle_at_start"] = gateway.idle_at_start
    finally:
        gateway.stop()
    return results


def _section(results: dict, failures: dict[int, str], levels: list[int], warmup: float, duration: float) -> Section:
    rows = []
    target = Target(TARGETS[0], None, f"not measured: {failures.get(200, 'level not run')}")
    levels_done = [level for level in levels if ("gateway", level) in results]
    for level in levels_done:
        direct = results[("direct", level)]["latencies_ms"]
        for name in ("direct", "gateway"):
            r = results[(name, level)]
            lat = r["latencies_ms"]
            p50, p99 = percentile(lat, 50), percentile(lat, 99)
            added50 = p50 - percentile(direct, 50)
            added99 = p99 - percentile(direct, 99)
            gateway = name == "gateway"
            cpu = r.get("cpu", {})
            gateway_cpu = cpu.get("gateway", 0.0)
            rows.append([str(level), name, str(len(lat)), fmt(p50, 2), fmt(p99, 2),
                         fmt(added50, 2) if gateway else "–", fmt(added99, 2) if gateway else "–",
                         fmt(gateway_cpu, 2) if gateway else "–",
                         fmt(1e6 * gateway_cpu * duration / max(1, len(lat)), 0) if gateway else "–",
                         fmt(r.get("rss", {}).get("gateway", 0) / 2 ** 20, 0) if gateway else "–",
                         fmt(cpu.get("workers"), 2), fmt(r.get("client_cpu"), 2),
                         f"{r['failed']} / {r['sessions']}", str(r["late_sends"])])
            if gateway and level == 200:
                ok = r["failed"] == 0 and added99 < 10.0
                target = Target(TARGETS[0], ok, f"added p99 {added99:.2f} ms, gateway CPU {gateway_cpu:.2f} cores, "
                                f"{r['failed']} failed sessions")
    table = Table(["sessions", "path", "messages", "p50 ms", "p99 ms", "added p50 ms", "added p99 ms",
                   "gateway CPU (cores)", "gateway CPU µs / message", "gateway RSS MiB", "workers CPU (cores)",
                   "load generator CPU (cores)", "failed / sessions", "late sends"], rows)
    method = " ".join(__doc__.split("\n", 1)[1].split())
    section = Section(KEY, TITLE, method, [table], [target])
    section.notes.append(f"Window: {warmup:.0f} s warm-up, then {duration:.0f} s measured per path and level; "
                         "latency = send of an audio_chunk to receipt of its result.")
    section.notes.append("'late sends': chunks sent more than one cadence (1 s) behind schedule, i.e. the "
                         "load generator or the system could not keep real time. Workers and load generator are one "
                         "process each: at 1.0 core they are the bottleneck, and latencies of both paths grow alike.")
    for level, reason in failures.items():
        section.notes.append(f"{level} sessions: not measured: {reason}")
    for level in levels_done:
        idle = results[("gateway", level)].get("idle_at_start", level)
        if idle < level:
            section.notes.append(f"At {level} sessions the gateway saw only {idle} of its {level} workers idle after "
                                 "60 s (the others failing health probes), so some sessions waited for a worker.")
    for level in levels_done:
        for name in ("direct", "gateway"):
            errors = results[(name, level)].get("errors")
            if errors:
                section.notes.append(f"{name} at {level} sessions, first errors: {'; '.join(errors[:2])}")
    return section
