"""The worker with the real model on a GPU: load, memory, mode switch, chat decoding, duplex chunks.

`python -m bench.gpu_model --model-code DIR --work DIR --out FILE.json [--variants eager,compile]` builds a
random-weight checkpoint of the full architecture (`config.full.json`, published token2wav sizes)
with `omnikube-checkpoint` on the GPU, starts the worker's own process on it
(`tests.fixtures.scripted_worker`: the CLI with the output heads scripted, so a chat reply is
exactly `--chat-tokens` tokens and every duplex unit speaks one short sentence through the TTS and
token2wav, the heaviest step there is), and drives it over its HTTP and WebSocket API:

- load: process start to `/health` idle, and the worker's own `omnikube_worker_model_load_seconds`;
- GPU memory used after initialisation (nvidia-smi), and after the duplex sessions;
- mode switch: the worker's `omnikube_worker_mode_switch_seconds` (mean per target mode);
- chat: `POST /chat` text, greedy, about 90 prompt tokens: 1 new token (the first token's latency),
  and `--chat-tokens` new tokens; per token = the difference / (tokens - 1), medians of 5;
- duplex: `--chunks` 1 s chunks that all speak, and the same count that all listen: the worker's
  own `wall_clock_ms` per chunk (prefill, generate, TTS, token2wav), p50/p99, real-time factor.

Nothing here asserts a number; `docs/benchmarks.md` gets the figures (GPU section) by hand, with
the card named.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import httpx
import numpy as np
from websockets.sync.client import connect

REPO = Path(__file__).resolve().parents[1]
PROMPT = ("You are a helpful assistant running on a benchmark. Please describe, in a few sentences, how a "
          "full-duplex voice assistant decides when to listen and when to speak, and why a GPU helps it keep "
          "up with real time in a conversation with a person who interrupts now and then.")


def gpu_memory_mib() -> int | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, check=True).stdout
        return int(out.split()[0])
    except (OSError, subprocess.CalledProcessError, ValueError, IndexError):
        return None


def gpu_name() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def repo_env(**extra: str) -> dict[str, str]:
    """This environment, with the checkout's packages importable (it runs from a plain checkout)."""
    path = os.pathsep.join([str(REPO), str(REPO / "worker"), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, PYTHONPATH=path, **extra)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def metric_values(text: str, name: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name):
            key, value = line.rsplit(" ", 1)
            values[key] = float(value)
    return values


# Worker flags per variant. Chat is left unscripted in all of them (random weights decode up to
# max_new_tokens): the scripted head reads every fed token back to the host, which would break the
# compiled decoding step the static variant measures. The static cache changes chat only, so that
# variant skips the duplex sessions.
VARIANTS = {"eager": [], "static": ["--chat-cache", "static"], "compile": ["--compile"]}
CHAT_ONLY = {"static"}


class Worker:
    def __init__(self, checkpoint: Path, work: Path, *, variant: str, chat_tokens: int, port: int = 22400):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        config = work / "worker-config.json"
        config.write_text(json.dumps({"service": {"data_dir": str(work / "data")}, "recording": {"enabled": False}}))
        env = repo_env(OMNIKUBE_CONFIG=str(config), OMNIKUBE_TEST_SPEAK_PERIOD="1",
                       OMNIKUBE_TEST_CHAT_TOKENS=str(chat_tokens), OMNIKUBE_TEST_UNSCRIPTED_CHAT="1")
        command = [sys.executable, "-m", "tests.fixtures.scripted_worker", "--backend", "minicpmo", "--model-path",
                   str(checkpoint), "--device", "auto", "--host", "127.0.0.1", "--port", str(port),
                   "--log-level", "warning"] + VARIANTS[variant]
        self.log_path = work / f"worker-{variant}.log"
        self.log = open(self.log_path, "wb")
        self.started = time.monotonic()
        self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_idle(self, deadline_s: float) -> float:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                # The reason travels in the result file: the GPU machine and its logs are gone after the call.
                raise RuntimeError(f"worker exited with {self.process.returncode}: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).json().get("worker_status") == "idle":
                    return time.monotonic() - self.started
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
        raise TimeoutError("worker did not become idle")

    def log_tail(self, lines: int = 12) -> str:
        self.log.flush()
        text = self.log_path.read_bytes()[-4000:].decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=10).text

    def chat_ms(self, max_new_tokens: int) -> float:
        body = {"messages": [{"role": "user", "content": PROMPT}],
                "generation": {"max_new_tokens": max_new_tokens, "do_sample": False}}
        started = time.perf_counter()
        answer = httpx.post(f"{self.url}/chat", json=body, timeout=600).json()
        elapsed = (time.perf_counter() - started) * 1000
        assert answer["success"], answer
        assert answer["token_stats"]["generated_tokens"] >= max_new_tokens, answer["token_stats"]
        return elapsed

    def duplex(self, chunks: int, listen_only: bool) -> list[dict]:
        rng = np.random.default_rng(0)
        config = {"force_listen_count": 10**6 if listen_only else 0, "generate_audio": True}
        with connect(f"ws://127.0.0.1:{self.port}/ws/duplex?session_id=bench_{int(listen_only)}",
                     max_size=2**27, compression=None) as ws:
            ws.send(json.dumps({"type": "prepare", "config": config}))
            assert json.loads(ws.recv(timeout=600))["type"] == "prepared"
            results = []
            for _ in range(chunks):
                audio = (0.05 * rng.standard_normal(16000)).astype("<f4")
                started = time.perf_counter()
                ws.send(json.dumps({"type": "audio_chunk", "audio_base64": base64.b64encode(audio.tobytes()).decode()}))
                result = json.loads(ws.recv(timeout=600))
                result["client_ms"] = (time.perf_counter() - started) * 1000
                results.append(result)
            ws.send(json.dumps({"type": "stop"}))
            ws.recv(timeout=60)
        return results

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def duplex_summary(results: list[dict]) -> dict:
    wall = [r["wall_clock_ms"] for r in results[2:]]  # the first two warm caches up
    summary = {"chunks": len(wall), "p50_ms": percentile(wall, 50), "p99_ms": percentile(wall, 99),
               "max_ms": max(wall), "rtf_p50": percentile(wall, 50) / 1000.0,
               "speaking": sum(not r["is_listen"] for r in results)}
    for cost in sorted({key for r in results for key in r if key.startswith("cost_")}):
        values = [r[cost] for r in results[2:] if r.get(cost)]
        if values:
            summary[f"{cost}_p50"] = percentile(values, 50)
    return summary


def measure(checkpoint: Path, work: Path, variant: str, chat_tokens: int, chunks: int,
            out: dict, save: Callable[[], None]) -> None:
    """Fills `out` stage by stage and saves after each, so a run cut off by its time limit keeps what it
    measured (a compiled model's first passes can take minutes)."""
    out["gpu_memory_before_mib"] = gpu_memory_mib()
    worker = Worker(checkpoint, work, variant=variant, chat_tokens=chat_tokens)
    try:
        out["ready_s"] = worker.wait_idle(1200.0)
        save()
        out["model_load_s"] = metric_values(worker.metrics(), "omnikube_worker_model_load_seconds")
        out["gpu_memory_after_init_mib"] = gpu_memory_mib()
        # The first call of each length is left out: it pays the CUDA (and, compiled, the graph) warm-up.
        first = [worker.chat_ms(1) for _ in range(6)]
        full = [worker.chat_ms(chat_tokens) for _ in range(6)]
        out["chat_first_call_ms"] = {"1": first[0], str(chat_tokens): full[0]}
        out["chat_first_token_ms"] = statistics.median(first[1:])
        out["chat_ms_per_token"] = (statistics.median(full[1:]) - statistics.median(first[1:])) / (chat_tokens - 1)
        save()
        if variant in CHAT_ONLY:
            return
        out["duplex_speaking"] = duplex_summary(worker.duplex(chunks, listen_only=False))
        save()
        out["duplex_listening"] = duplex_summary(worker.duplex(chunks, listen_only=True))
        save()
        worker.chat_ms(1)  # back to chat: a duplex -> chat switch is timed too
        text = worker.metrics()
        sums = metric_values(text, "omnikube_worker_mode_switch_seconds_sum")
        counts = metric_values(text, "omnikube_worker_mode_switch_seconds_count")
        out["mode_switch_mean_ms"] = {key.split('mode="')[1].split('"')[0]: 1000 * value / counts[key.replace("_sum", "_count")]
                                      for key, value in sums.items() if counts.get(key.replace("_sum", "_count"))}
        out["gpu_memory_after_duplex_mib"] = gpu_memory_mib()
        save()
    finally:
        worker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_model", description=__doc__.splitlines()[0])
    parser.add_argument("--model-code", type=Path, required=True)
    parser.add_argument("--config", default="config.full.json", help="config file in --model-code")
    parser.add_argument("--token2wav", default="full", choices=("full", "tiny"))
    parser.add_argument("--device", default="cuda", help="where the checkpoint is built")
    parser.add_argument("--work", type=Path, default=Path("/tmp/omnikube-gpu-bench"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", default="eager", help=f"comma list of {', '.join(VARIANTS)}")
    parser.add_argument("--chat-tokens", type=int, default=65)
    parser.add_argument("--chunks", type=int, default=30)
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    report: dict = {"gpu": gpu_name(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    started = time.monotonic()
    checkpoint = args.work / f"checkpoint-{Path(args.config).stem}"
    # Its own process: the weights it initialises on the GPU are gone before the worker is measured.
    subprocess.run([sys.executable, "-m", "omnikube_worker.checkpoint", "--code", str(args.model_code.resolve()),
                    "--config", str((args.model_code / args.config).resolve()), "--output", str(checkpoint),
                    "--token2wav", args.token2wav, "--device", args.device], check=True, cwd=REPO,
                   env=repo_env())
    report["checkpoint_build_s"] = time.monotonic() - started
    report["checkpoint"] = json.loads((checkpoint / "omnikube-checkpoint.json").read_text())

    def save() -> None:
        partial = args.out.with_suffix(".partial")
        partial.write_text(json.dumps(report, indent=2))
        partial.replace(args.out)

    for variant in args.variants.split(","):
        report[variant] = {}
        try:
            measure(checkpoint, args.work, variant, args.chat_tokens, args.chunks, report[variant], save)
        except Exception as exc:  # noqa: BLE001 - keep what the other variant measured
            report[variant]["error"] = f"{type(exc).__name__}: {exc}"
        save()
        print(json.dumps(report[variant], indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
