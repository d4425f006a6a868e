"""Benchmark 1: what the gateway adds to a chat request, next to nginx and to no proxy at all.

Closed-loop `wrk` clients POST one small chat request at a time each, for concurrency 1, 16 and 64,
against three paths to the same simulated workers (zero inference delay, one worker per client so
no request ever waits for a worker): straight to the workers (`POST /chat`), through nginx
(`least_conn`, keep-alive), and through the gateway (`POST /api/chat`). The three paths are run in
turn, several rounds, and each figure is the median over rounds, so slow drifts of a shared
machine hit all three alike.
"""

from __future__ import annotations

import json

from tests.fixtures.processes import free_port

from . import nginx, wrk
from .context import Context
from .procs import ProcessGroup, free_ports, usage
from .report import Section, Table, Target
from .stack import ZERO_DELAY, start_gateway, start_workers
from .stats import fmt, fmt_pct, median, ratio

KEY = "http"
TITLE = "1. HTTP overhead"
TARGETS = ["added p50 < 1 ms at c=16", "added p99 < 5 ms at c=16", "throughput >= 90% of direct at c=16",
           "gateway CPU per chat <= 2x nginx's at c=16"]
TARGET_KEYS = ("p50", "p99", "rps", "cpu")
BODY = json.dumps({"messages": [{"role": "user", "content": "Hello, how are you?"}]})


def run(ctx: Context) -> Section:
    if not wrk.available():
        return Section.missing(KEY, TITLE, __doc__, "wrk is not installed (scripts/setup.d/70-bench.sh)", TARGETS)
    concurrencies = [1, 16, 64]
    duration = 3 if ctx.quick else 5
    rounds = 1 if ctx.quick else 3
    log_dir = ctx.dir("http")
    with ProcessGroup(log_dir) as group:
        worker_ports = free_ports(max(concurrencies))
        farm = start_workers(group, worker_ports, ZERO_DELAY)
        gateway = start_gateway(group, worker_ports)
        # path -> (ports, URL path, the process whose CPU is that path's own cost)
        paths = {"direct": (worker_ports, "/chat", farm.pid), "gateway": ([gateway.port], "/api/chat", gateway.pid)}
        if nginx.available():
            nginx_port = free_port()
            proxy = nginx.start(group, nginx_port, worker_ports)
            paths["nginx"] = ([nginx_port], "/chat", proxy.pid)
        samples: dict[tuple[str, int], list[wrk.WrkResult]] = {}
        cpu_us: dict[tuple[str, int], list[float]] = {}
        for c in concurrencies:
            for name, (ports, path, _) in paths.items():
                wrk.run(ports, path, BODY, c, 1, log_dir)  # warm connections and caches
            for _ in range(rounds):
                for name, (ports, path, pid) in paths.items():
                    before = usage(pid).cpu_s
                    result = wrk.run(ports, path, BODY, c, duration, log_dir)
                    samples.setdefault((name, c), []).append(result)
                    cpu_us.setdefault((name, c), []).append(1e6 * (usage(pid).cpu_s - before) / max(1, result.requests))
    (log_dir / "results.json").write_text(json.dumps(
        [{"path": name, "clients": c, "cpu_us_per_request": cpu_us[(name, c)], "runs": [vars(r) for r in runs]}
         for (name, c), runs in samples.items()], indent=1))
    return _section(samples, cpu_us, concurrencies, list(paths), duration, rounds)


def _summary(results: list[wrk.WrkResult]) -> dict[str, float]:
    return {
        "p50": median([r.p50_ms for r in results]),
        "p99": median([r.p99_ms for r in results]),
        "rps": median([r.rps for r in results]),
        "errors": sum(r.errors for r in results),
        "requests": sum(r.requests for r in results),
    }


def _section(samples, cpu_us, concurrencies, names, duration, rounds) -> Section:
    rows = []
    verdicts: dict[str, Target] = {}
    for c in concurrencies:
        direct = _summary(samples[("direct", c)])
        for name in names:
            s = _summary(samples[(name, c)])
            added_p50 = s["p50"] - direct["p50"]
            added_p99 = s["p99"] - direct["p99"]
            throughput = ratio(s["rps"], direct["rps"])
            rows.append([str(c), name, fmt(s["p50"], 3), fmt(s["p99"], 3),
                         "–" if name == "direct" else fmt(added_p50, 3),
                         "–" if name == "direct" else fmt(added_p99, 3),
                         fmt(s["rps"], 0), fmt_pct(throughput), fmt(median(cpu_us[(name, c)]), 0),
                         f"{s['errors']:.0f} / {s['requests']:.0f}"])
            if name == "gateway" and c == 16:
                verdicts["p50"] = Target(TARGETS[0], added_p50 < 1.0, f"{added_p50:.3f} ms")
                verdicts["p99"] = Target(TARGETS[1], added_p99 < 5.0, f"{added_p99:.3f} ms")
                verdicts["rps"] = Target(TARGETS[2], throughput >= 0.9, fmt_pct(throughput))
                if "nginx" in names:
                    ours, theirs = median(cpu_us[("gateway", c)]), median(cpu_us[("nginx", c)])
                    verdicts["cpu"] = Target(TARGETS[3], ours <= 2 * theirs,
                                             f"{ours:.0f} µs vs nginx {theirs:.0f} µs ({ours / theirs:.1f}x)")
    table = Table(["clients", "path", "p50 ms", "p99 ms", "added p50 ms", "added p99 ms", "req/s",
                   "throughput vs direct", "CPU µs / request", "errors / requests"], rows)
    section = Section(KEY, TITLE, __doc__.split("\n", 1)[1].strip().replace("\n", " "), [table],
                      [verdicts.get(k, Target(t, None, "not measured")) for k, t in zip(TARGET_KEYS, TARGETS)])
    section.notes.append(f"{rounds} round(s) of {duration} s per path and concurrency; "
                         "latency percentiles are wrk's, per request; 'added' = path minus direct.")
    section.notes.append("'CPU µs / request' is the CPU time of that path's own process per request: the workers' "
                         "for direct, the proxy's alone for nginx and the gateway. Unlike latency it hardly depends on "
                         "what else the shared machine runs.")
    section.notes.append("Load generator, workers, proxy and gateway share the same 2 cores, so throughput "
                         "at 16 and 64 clients is CPU-bound: the ratio says what the extra hop costs in CPU.")
    if "nginx" not in names:
        section.notes.append("nginx not measured: not installed (scripts/setup.d/70-bench.sh installs it).")
    return section
