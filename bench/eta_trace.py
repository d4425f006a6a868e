"""Benchmark 3: how far off the queue's ETAs are, ours next to the seed's rule, on one trace.

A seeded synthetic trace (`bench/trace.py`: Poisson arrivals; chat, streaming chat, audio and omni
duplex; log-normal durations) is driven through the real gateway in front of N simulated workers,
time-compressed (trace seconds / C = wall seconds). Chat goes to `POST /api/chat` and streaming
chat to `WS /ws/chat` (their length set through `max_new_tokens`, the simulated worker producing one
token per 2 trace seconds); duplex sessions to `WS /ws/duplex/{id}` (the client holds them for
their duration, sending audio, then stops). For every request that had to queue, the actual wait
is compared with the wait predicted at the moment it arrived, |predicted - actual| / actual.
Both estimators of `omnikube_gateway.eta` (ours, `ResidualEstimator`, and the seed's baseline+EMA
rule, `SeedEstimator`) are replayed on the same recorded events (arrivals, starts, ends) in trace
seconds; the live column is what clients were told by the running gateway (our estimator).
"""

# Offline loops for developing the estimator (not part of the report):
#   python -m bench.eta_trace replay tmp/bench/<stamp>/eta/outcomes.json   a recorded run, both estimators
#   python -m bench.eta_trace simulate --seeds 1-12 --workers 4 --load 0.9  idealised FIFO runs, no gateway
#   python -m bench.eta_trace live --seed 7                                 a real run on another trace

from __future__ import annotations

import argparse
import asyncio
import base64
import heapq
import json
import random
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np
import websockets

from omnikube.config import ServiceSection
from omnikube.protocol import TaskType
from omnikube_gateway.eta import Durations, Estimator, Job, ResidualEstimator, Running, SeedEstimator, baselines_from_config

from .context import Context
from .procs import REPO, ProcessGroup, free_ports
from .report import Section, Table, Target
from .stack import start_gateway, start_workers
from .stats import fmt, fmt_pct, percentile
from .trace import MIX, TraceItem, sample_duration, synthetic_trace

KEY = "eta"
TITLE = "3. Queue and ETA"
TARGETS = ["our median ETA error <= half the seed's"]

SEED = 20260101
TOKEN_TRACE_S = 2.0        # one simulated token = 2 trace seconds
PREFILL_TRACE_S = 0.5
MAX_REPLY_TOKENS = 26      # the simulated reply to PROMPT is 26 words long
PROMPT = "please tell me a long story about the sea the wind the ships and the people who sail them"
QUEUED_MIN_TRACE_S = 1.0   # waits shorter than this are immediate dispatch plus connection set-up
ORACLE = "ours told the true durations, no budgets (replayed)"
NO_BUDGETS = "ours without token budgets (replayed)"


@dataclass
class Outcome:
    item: TraceItem
    arrived: float = 0.0
    started: float | None = None
    ended: float | None = None
    queued: bool | None = None      # what the gateway said, where it says it
    live_estimated_wait_s: float | None = None  # gateway's estimate on entering the queue (wall seconds)
    error: str | None = None


def sim_env(compression: float) -> dict[str, str]:
    return {
        "OMNIKUBE_SIM_LOAD_S": "0",
        "OMNIKUBE_SIM_PREFILL_MS": str(1000 * PREFILL_TRACE_S / compression),
        "OMNIKUBE_SIM_TOKENS_PER_S": str(compression / TOKEN_TRACE_S),
        "OMNIKUBE_SIM_WORDS_PER_CHUNK": "2",
        "OMNIKUBE_SIM_DUPLEX_STEP_MS": "1",
        "OMNIKUBE_SIM_FINALIZE_MS": "0",
    }


def gateway_config(compression: float) -> dict:
    """The seed's baselines, compressed like the trace, so the live gateway starts where the seed does."""
    s = ServiceSection()
    return {"service": {
        "eta_chat_s": s.eta_chat_s / compression, "eta_streaming_s": s.eta_streaming_s / compression,
        "eta_half_duplex_s": s.eta_half_duplex_s / compression,
        "eta_audio_duplex_s": s.eta_audio_duplex_s / compression,
        "eta_omni_duplex_s": s.eta_omni_duplex_s / compression,
    }}


def tokens_for(duration_trace_s: float) -> int:
    return max(1, min(MAX_REPLY_TOKENS, round((duration_trace_s - PREFILL_TRACE_S) / TOKEN_TRACE_S)))


class Driver:
    """Replays a trace against one gateway, compressed; records when each request waited and ran."""

    def __init__(self, base: str, compression: float) -> None:
        self.base = base                                  # http://host:port
        self.ws_base = base.replace("http://", "ws://")
        self.compression = compression
        silence = np.zeros(1600, dtype="<f4").tobytes()   # 0.1 s: the ETA does not depend on its size
        self.chunk = json.dumps({"type": "audio_chunk", "audio_base64": base64.b64encode(silence).decode()})

    async def run(self, trace: list[TraceItem]) -> list[Outcome]:
        outcomes = [Outcome(item) for item in trace]
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
        async with httpx.AsyncClient(timeout=600, limits=limits) as client:
            t0 = time.monotonic() + 0.5
            await asyncio.gather(*(self._one(client, o, t0) for o in outcomes))
        return outcomes

    async def _one(self, client: httpx.AsyncClient, out: Outcome, t0: float) -> None:
        await asyncio.sleep(max(0.0, t0 + out.item.arrival_s / self.compression - time.monotonic()))
        out.arrived = time.monotonic()
        try:
            if out.item.task_type is TaskType.chat:
                await self._chat(client, out)
            elif out.item.task_type is TaskType.streaming:
                await self._streaming(out)
            else:
                await self._duplex(out)
        except Exception as exc:  # noqa: BLE001 - a failed request is reported, not fatal
            out.error = f"{type(exc).__name__}: {exc}"

    async def _chat(self, client: httpx.AsyncClient, out: Outcome) -> None:
        body = {"messages": [{"role": "user", "content": PROMPT}],
                "generation": {"max_new_tokens": tokens_for(out.item.duration_s)}}
        response = await client.post(f"{self.base}/api/chat", json=body)
        out.ended = time.monotonic()
        data = response.json()
        if response.status_code != 200 or "queue_wait_ms" not in data:
            raise RuntimeError(f"chat: HTTP {response.status_code}: {str(data)[:200]}")
        out.started = out.arrived + data["queue_wait_ms"] / 1000
        if data["queue_wait_ms"] > 0:
            out.live_estimated_wait_s = data.get("estimated_queue_wait_s")

    async def _streaming(self, out: Outcome) -> None:
        async with websockets.connect(f"{self.ws_base}/ws/chat", max_size=None, compression=None,
                                      open_timeout=300) as ws:
            await ws.send(json.dumps({"messages": [{"role": "user", "content": PROMPT}], "streaming": True,
                                      "generation": {"max_new_tokens": tokens_for(out.item.duration_s)}}))
            async for raw in ws:
                frame = json.loads(raw)
                if frame.get("type") == "prefill_done" and out.started is None:
                    # /ws/chat has no queue frames: the worker's first frame, less its prefill, marks the start.
                    out.started = time.monotonic() - PREFILL_TRACE_S / self.compression
                elif frame.get("type") == "done":
                    break
                elif frame.get("type") == "error":
                    raise RuntimeError(f"ws/chat error: {frame}")
        out.ended = time.monotonic()

    async def _duplex(self, out: Outcome) -> None:
        prefix = "adx" if out.item.task_type is TaskType.audio_duplex else "omni"
        hold_s = out.item.duration_s / self.compression
        step_s = 1.0 / self.compression  # one chunk per trace second
        async with websockets.connect(f"{self.ws_base}/ws/duplex/{prefix}_t{out.item.index}", max_size=None,
                                      compression=None, open_timeout=300) as ws:
            await ws.send(json.dumps({"type": "prepare"}))
            out.queued = False
            async for raw in ws:
                frame = json.loads(raw)
                kind = frame.get("type")
                if kind == "queued":
                    out.queued = True
                    out.live_estimated_wait_s = frame.get("estimated_wait_s")
                elif kind == "queue_done":
                    out.started = time.monotonic()
                elif kind == "prepared":
                    break
                elif kind == "error":
                    raise RuntimeError(f"duplex error: {frame}")
            while time.monotonic() - out.started < hold_s:
                await ws.send(self.chunk)
                while json.loads(await ws.recv()).get("type") != "result":
                    pass
                await asyncio.sleep(max(0.0, min(step_s, hold_s - (time.monotonic() - out.started))))
            await ws.send(json.dumps({"type": "stop"}))
            async for raw in ws:
                if json.loads(raw).get("type") == "stopped":
                    break
        out.ended = time.monotonic()


@dataclass
class Prediction:
    outcome: Outcome
    predicted_s: float  # trace seconds
    actual_s: float

    @property
    def error(self) -> float:
        return abs(self.predicted_s - self.actual_s) / self.actual_s


def _waited(out: Outcome, compression: float, busy: bool = True) -> bool:
    """Did this request queue? Duplex frames say so; for the others, every worker was taken (`busy`)
    when it arrived and its wait was longer than connection set-up."""
    actual = (out.started - out.arrived) * compression
    return actual >= QUEUED_MIN_TRACE_S and (out.queued if out.queued is not None else busy)


@dataclass(frozen=True)
class Timing:
    """What the workers reported of their generations (`/health`), in trace seconds."""

    overhead_s: float
    per_token_s: float

    @classmethod
    def reported(cls, health: list[dict], compression: float) -> Timing | None:
        """The mean over the workers that measured any generation; None if none did."""
        fits = [(h["generation_overhead_ms"], h["ms_per_token"]) for h in health if h.get("ms_per_token")]
        if not fits:
            return None
        return cls(compression * sum(f[0] for f in fits) / len(fits) / 1000,
                   compression * sum(f[1] for f in fits) / len(fits) / 1000)

    def budget(self, item: TraceItem) -> float | None:
        """As the gateway computes it: the request's max_new_tokens at the workers' measured pace."""
        if item.task_type not in (TaskType.chat, TaskType.streaming):
            return None
        return self.overhead_s + tokens_for(item.duration_s) * self.per_token_s


def replay(outcomes: list[Outcome], workers: int, compression: float, estimator: Estimator,
           timing: Timing | None = None) -> list[Prediction]:
    """Predict, for every queued request, its wait as `estimator` would have at its arrival.

    The estimator sees what the gateway saw at that instant, in trace seconds: the sessions running
    (type, age, budget), the tickets ahead in FIFO order (with their budgets), and the durations
    of every session that had ended. Budgets exist only with the workers' reported `timing`.
    """
    done = sorted((o for o in outcomes if o.error is None), key=lambda o: o.arrived)
    endings = sorted(done, key=lambda o: o.ended)

    def budget(o: Outcome) -> float | None:
        return timing.budget(o.item) if timing is not None else None

    def job(o: Outcome) -> TaskType | Job:
        return o.item.task_type if budget(o) is None else Job(o.item.task_type, budget(o))

    def record(o: Outcome) -> None:
        duration = (o.ended - o.started) * compression
        if budget(o) is None:
            estimator.record(o.item.task_type, duration)
        else:
            estimator.record(o.item.task_type, duration, budget_s=budget(o))

    fed = 0
    predictions = []
    for out in done:
        now = out.arrived
        while fed < len(endings) and endings[fed].ended <= now:
            record(endings[fed])
            fed += 1
        running = [Running(o.item.task_type, (now - o.started) * compression, budget(o))
                   for o in done if o.started <= now < o.ended][:workers]
        ahead = [job(o) for o in done if o.arrived < now < o.started]
        if not _waited(out, compression, busy=len(running) >= workers or bool(ahead)):
            continue
        slots: list[Running | None] = running + [None] * (workers - len(running))
        predicted = estimator.queue_waits(slots, ahead + [job(out)])[-1]
        predictions.append(Prediction(out, predicted, (out.started - out.arrived) * compression))
    return predictions


def live(outcomes: list[Outcome], compression: float) -> list[Prediction]:
    """What the running gateway told clients on entering the queue (chat and duplex say it)."""
    return [Prediction(o, o.live_estimated_wait_s * compression, (o.started - o.arrived) * compression)
            for o in outcomes if o.error is None and o.live_estimated_wait_s is not None and _waited(o, compression)]


def run(ctx: Context, seed: int = SEED, workers: int = 4, load: float = 0.9) -> Section:
    count, compression = (80, 60.0) if ctx.quick else (240, 30.0)
    trace = synthetic_trace(seed, count, workers, load)
    log_dir = ctx.dir("eta")
    with ProcessGroup(log_dir) as group:
        ports = free_ports(workers)
        start_workers(group, ports, sim_env(compression))
        gateway = start_gateway(group, ports, config=gateway_config(compression))
        started = time.monotonic()
        outcomes = asyncio.run(Driver(gateway.url, compression).run(trace))
        wall_s = time.monotonic() - started
        # What the workers measured of their chats, as the gateway's probes read it (it is a pace,
        # steady over the run: read once at the end rather than tracked through it).
        health = [httpx.get(f"http://127.0.0.1:{port}/health", timeout=5.0).json() for port in ports]
    save_outcomes(log_dir / "outcomes.json", outcomes, seed, workers, load, compression, health)
    timing = Timing.reported(health, compression)
    results = compare(outcomes, workers, compression, timing)
    results["ours (live gateway)"] = live(outcomes, compression)
    return _section(results, outcomes, trace, seed, workers, load, compression, wall_s, timing)


def compare(outcomes: list[Outcome], workers: int, compression: float,
            timing: Timing | None) -> dict[str, list[Prediction]]:
    """Both estimators replayed on the same events, each from the seed's default baselines; ours also
    without token budgets, and told the trace's true duration distributions instead of budgets."""
    baselines = baselines_from_config(ServiceSection())
    return {
        "ours (replayed)": replay(outcomes, workers, compression, ResidualEstimator(baselines), timing),
        "seed rule (replayed)": replay(outcomes, workers, compression, SeedEstimator(baselines), timing),
        NO_BUDGETS: replay(outcomes, workers, compression, ResidualEstimator(baselines)),
        ORACLE: replay(outcomes, workers, compression, KnownDurations(baselines)),
    }


class KnownDurations(ResidualEstimator):
    """Our method, but told each type's true duration distribution (the trace's generator, chat lengths
    rounded to tokens like the driver's) instead of learning it from the sessions that ended."""

    def __init__(self, baselines: dict[TaskType, float], draws: int = 20000) -> None:
        super().__init__(baselines)
        rng = random.Random(SEED)
        self.known = {t: Durations.from_samples(_held(t, sample_duration(rng, t)) for _ in range(draws)) for t in MIX}

    def durations(self, task_type: TaskType) -> Durations:
        return self.known.get(task_type) or super().durations(task_type)


def _held(task_type: TaskType, duration_s: float) -> float:
    """How long the driver holds a worker for a trace duration (chat: whole simulated tokens)."""
    if task_type in (TaskType.chat, TaskType.streaming):
        return PREFILL_TRACE_S + tokens_for(duration_s) * TOKEN_TRACE_S
    return duration_s


def save_outcomes(path: Path, outcomes: list[Outcome], seed: int, workers: int, load: float,
                  compression: float, health: list[dict]) -> None:
    path.write_text(json.dumps({
        "seed": seed, "workers": workers, "load": load, "compression": compression, "worker_health": health,
        "outcomes": [
            {"index": o.item.index, "type": o.item.task_type.value, "arrival_trace_s": o.item.arrival_s,
             "duration_trace_s": o.item.duration_s, "arrived": o.arrived, "started": o.started, "ended": o.ended,
             "queued": o.queued, "live_estimated_wait_s": o.live_estimated_wait_s, "error": o.error} for o in outcomes],
    }, indent=1))


def load_outcomes(path: Path) -> tuple[list[Outcome], int, float, Timing | None]:
    """Outcomes, workers, compression and the workers' reported timing of a recorded run (older
    files are a bare list: 4 workers, 60x for the 80 requests of --quick, else 30x; no timing)."""
    data = json.loads(path.read_text())
    if isinstance(data, list):
        rows, workers, compression, health = data, 4, 60.0 if len(data) == 80 else 30.0, []
    else:
        rows, workers, compression = data["outcomes"], data["workers"], data["compression"]
        health = data.get("worker_health", [])
    outcomes = [Outcome(TraceItem(r["index"], r["arrival_trace_s"], TaskType(r["type"]), r["duration_trace_s"]),
                        r["arrived"], r["started"], r["ended"], r["queued"],
                        r.get("live_estimated_wait_s", r.get("live_eta_s")),  # older files: live_eta_s
                        r["error"])
                for r in rows]
    return outcomes, workers, compression, Timing.reported(health, compression)


def fifo_outcomes(trace: list[TraceItem], workers: int, seed: int) -> list[Outcome]:
    """An idealised run of `trace` in trace seconds: one FIFO, `workers` servers, chat lengths rounded to
    whole simulated tokens like the driver's, and a little set-up jitter. No gateway involved."""
    rng = random.Random(seed)
    free_at = [0.0] * workers
    outcomes = []
    for item in trace:
        free = heapq.heappop(free_at)
        started = max(free, item.arrival_s) + rng.uniform(0.01, 0.1)
        ended = started + _held(item.task_type, item.duration_s) + rng.uniform(0.05, 0.4)
        heapq.heappush(free_at, ended)
        duplex = item.task_type in (TaskType.audio_duplex, TaskType.omni_duplex)
        outcomes.append(Outcome(item, item.arrival_s, started, ended, queued=free > item.arrival_s if duplex else None))
    return outcomes


def _section(results: dict[str, list[Prediction]], outcomes: list[Outcome], trace: list[TraceItem],
             trace_seed: int, workers: int, load: float, compression: float, wall_s: float,
             timing: Timing | None) -> Section:
    rows = []
    for name, predictions in results.items():
        errors = [p.error for p in predictions]
        bias = [(p.predicted_s - p.actual_s) / p.actual_s for p in predictions]
        rows.append([name, str(len(predictions)), fmt_pct(percentile(errors, 50)), fmt_pct(percentile(errors, 90)),
                     fmt_pct(percentile(bias, 50))])
    by_type = []
    for task_type in TaskType:
        cells = []
        for name in ("ours (replayed)", "seed rule (replayed)"):
            errors = [p.error for p in results[name] if p.outcome.item.task_type is task_type]
            cells.append(fmt_pct(percentile(errors, 50)) + f" (n={len(errors)})")
        if any(not c.startswith("–") for c in cells):
            by_type.append([task_type.value] + cells)
    ours = percentile([p.error for p in results["ours (replayed)"]], 50)
    seed = percentile([p.error for p in results["seed rule (replayed)"]], 50)
    p90 = {name: percentile([p.error for p in results[name]], 90) for name in ("ours (replayed)", "seed rule (replayed)")}
    target = Target(TARGETS[0], ours <= seed / 2 if ours == ours and seed == seed else None,
                    f"ours {fmt_pct(ours)} vs seed {fmt_pct(seed)} (ratio {fmt(ours / seed if seed else float('nan'), 2)}); "
                    f"p90 {fmt_pct(p90['ours (replayed)'])} vs {fmt_pct(p90['seed rule (replayed)'])}")
    failed = [o for o in outcomes if o.error]
    waits = [(o.started - o.arrived) * compression for o in outcomes if o.error is None]
    method = " ".join(__doc__.split("\n", 1)[1].split())
    section = Section(KEY, TITLE, method, [
        Table(["estimator", "queued requests", "median error", "p90 error", "median bias (signed)"], rows),
        Table(["task type", "ours: median error", "seed: median error"], by_type, caption="By task type (replayed):"),
    ], [target])
    section.notes += [
        f"Trace: seed {trace_seed}, {len(trace)} requests, {workers} workers, offered load {load:.0%}, "
        f"compression {compression:.0f}x ({trace[-1].arrival_s:.0f} trace s in {wall_s:.0f} wall s); "
        f"{sum(1 for w in waits if w >= QUEUED_MIN_TRACE_S)} requests queued, median wait {percentile(waits, 50):.1f} "
        f"trace s, p90 {percentile(waits, 90):.1f}; {len(failed)} requests failed"
        + (f" (first: {failed[0].error})" if failed else "") + ".",
        "Both replays start from the seed's default baselines (chat 15 s, streaming 20 s, audio duplex 120 s, "
        "omni duplex 90 s; the original gave `/ws/chat` 30 s, so 20 s is the kinder choice for the seed) and learn "
        "from the durations of sessions that ended before each arrival.",
        "Token budgets: chat (`POST /api/chat`) and streaming chat (`/ws/chat`) requests carry `max_new_tokens`, "
        "and the workers report their measured pace on `/health` (`generation_overhead_ms`, `ms_per_token`, fitted "
        "over their own chats); ours turns the two into each chat's budget, as the live gateway does. "
        + (f"Reported at the end of this run (mean of {workers} workers, in trace s): {timing.overhead_s:.2f} s + "
           f"{timing.per_token_s:.2f} s per token." if timing is not None else "No worker reported a pace in this run.")
        + f" '{NO_BUDGETS}' is the same estimator told no budgets (types and ages only).",
        f"'{ORACLE}' is our method given the trace generator's exact duration distributions instead of "
        "learning them, and no budgets: about the best any estimator can do that knows only the running sessions' "
        "types and ages and the queued tickets' types; what is left is which sessions happen to run long. Budgets "
        "are information beyond that; duplex sessions have none (their clients decide when they end).",
        f"The live column is compressed like the trace, but the gateway rounds ETAs to 0.1 wall s ({0.1 * compression:g} "
        f"trace s at {compression:g}x), so it is shown for reference only; `/ws/chat` sends no queue frames and has "
        "no live estimate.",
    ]
    return section


# -- offline development loops -----------------------------------------------------------------

def _summary(name: str, results: dict[str, list[Prediction]]) -> str:
    cells = []
    for label, predictions in results.items():
        errors = [p.error for p in predictions]
        short = {ORACLE: "told true durations", NO_BUDGETS: "no budgets"}.get(label, label.split(" (")[0])
        cells.append(f"{short} {fmt_pct(percentile(errors, 50))} / {fmt_pct(percentile(errors, 90))}")
    return f"{name}: n={len(next(iter(results.values())))}, median / p90 error: " + ", ".join(cells)


def _seeds(text: str) -> list[int]:
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.eta_trace", description="ETA estimators, offline or on one trace")
    sub = parser.add_subparsers(dest="command", required=True)
    replay_cmd = sub.add_parser("replay", help="replay recorded outcomes.json files through both estimators")
    replay_cmd.add_argument("paths", nargs="+", type=Path)
    sim_cmd = sub.add_parser("simulate", help="idealised FIFO runs of synthetic traces (no gateway)")
    live_cmd = sub.add_parser("live", help="one real run through the gateway on a chosen trace")
    for cmd in (sim_cmd, live_cmd):
        cmd.add_argument("--workers", type=int, default=4)
        cmd.add_argument("--load", type=float, default=0.9)
    sim_cmd.add_argument("--seeds", default="1-12", help="a seed or a range, e.g. 1-12")
    sim_cmd.add_argument("--count", type=int, default=240)
    live_cmd.add_argument("--seed", type=int, default=SEED)
    live_cmd.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "replay":
        for path in args.paths:
            outcomes, workers, compression, timing = load_outcomes(path)
            print(_summary(str(path), compare(outcomes, workers, compression, timing)))
    elif args.command == "simulate":
        pooled: dict[str, list[Prediction]] = {}
        for seed in _seeds(args.seeds):
            trace = synthetic_trace(seed, args.count, args.workers, args.load)
            results = compare(fifo_outcomes(trace, args.workers, seed), args.workers, 1.0,
                              Timing(PREFILL_TRACE_S, TOKEN_TRACE_S))
            print(_summary(f"seed {seed}", results))
            for label, predictions in results.items():
                pooled.setdefault(label, []).extend(predictions)
        print(_summary("pooled", pooled))
    else:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        ctx = Context(log_dir=REPO / "tmp" / "bench" / stamp, quick=args.quick)
        section = run(ctx, seed=args.seed, workers=args.workers, load=args.load)
        for table in section.tables:
            print("\n".join([table.caption, " | ".join(table.headers)] + [" | ".join(row) for row in table.rows]))
        print("\n".join(section.notes))
        for target in section.targets:
            print(f"{target.name}: {target.met} ({target.detail})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
