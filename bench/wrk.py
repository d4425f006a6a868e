"""Drive one HTTP target with `wrk` (Debian's package): closed loop, one connection per thread.

wrk is C and costs far less CPU per request than any Python client, which matters on a 2-core
machine where the load generator shares the CPU with what it measures. A Lua script pins thread i
to address i (so "direct" can give every connection its own worker) and prints the summary as JSON.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

_SCRIPT = """
local ports = {%(ports)s}
local counter = 0
local addrs = {}

function setup(thread)
  counter = counter + 1
  local port = ports[((counter - 1) %% #ports) + 1]
  if addrs[port] == nil then
    addrs[port] = wrk.lookup("127.0.0.1", tostring(port))[1]
  end
  thread.addr = addrs[port]
end

wrk.method = "POST"
wrk.path = "%(path)s"
wrk.body = '%(body)s'
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, "mean_us": %%f, ' ..
    '"err_connect": %%d, "err_read": %%d, "err_write": %%d, "err_status": %%d, "err_timeout": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


def available() -> bool:
    return shutil.which("wrk") is not None


def run(ports: Sequence[int], path: str, body: str, connections: int, duration_s: float,
        script_dir: Path) -> WrkResult:
    """`connections` closed-loop connections, connection i to 127.0.0.1:ports[i % len(ports)]."""
    script_dir.mkdir(parents=True, exist_ok=True)
    script = script_dir / f"wrk-{'-'.join(map(str, ports[:2]))}-{len(ports)}.lua"
    script.write_text(_SCRIPT % {"ports": ", ".join(map(str, ports)), "path": path, "body": body})
    argv = ["wrk", "-t", str(connections), "-c", str(connections), "-d", f"{duration_s:.0f}s",
            "--timeout", "10s", "-s", str(script), f"http://127.0.0.1:{ports[0]}{path}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 60)
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            data = json.loads(line[len("WRKJSON "):])
            errors = sum(v for k, v in data.items() if k.startswith("err_"))
            return WrkResult(data["requests"], data["duration_us"] / 1e6, data["p50_us"] / 1e3,
                             data["p99_us"] / 1e3, data["mean_us"] / 1e3, errors)
    raise RuntimeError(f"wrk printed no summary (exit {out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}")
