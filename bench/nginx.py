"""nginx (Debian's package) as a plain reverse proxy on loopback: the floor of what a proxy costs.

One worker process (the gateway is one process too), keep-alive to the upstreams, no access log,
`least_conn` so that, with as many closed-loop clients as upstream workers, every request finds an
idle worker (each simulated worker serves one request at a time, like the real one).
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from typing import Sequence

from .procs import Managed, ProcessGroup, wait_until


def available() -> bool:
    return shutil.which("nginx") is not None


def _config(state_dir: Path, listen_port: int, upstream_ports: Sequence[int]) -> str:
    servers = "\n".join(f"    server 127.0.0.1:{p} max_fails=0;" for p in upstream_ports)
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""
{user}
worker_processes 1;
daemon off;
pid {state_dir}/nginx.pid;
error_log {state_dir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {state_dir}/body;
  proxy_temp_path {state_dir}/proxy;
  fastcgi_temp_path {state_dir}/fastcgi;
  uwsgi_temp_path {state_dir}/uwsgi;
  scgi_temp_path {state_dir}/scgi;
  client_max_body_size 128m;
  upstream workers {{
    least_conn;
{servers}
    keepalive 256;
  }}
  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
  server {{
    listen 127.0.0.1:{listen_port} backlog=4096;
    location / {{
      proxy_pass http://workers;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_read_timeout 300s;
    }}
  }}
}}
"""


def start(group: ProcessGroup, listen_port: int, upstream_ports: Sequence[int]) -> Managed:
    state_dir = (group.log_dir / "nginx").resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    conf = state_dir / "nginx.conf"
    conf.write_text(_config(state_dir, listen_port, upstream_ports))
    proc = group.start("nginx", [shutil.which("nginx") or "nginx", "-p", str(state_dir), "-c", str(conf),
                                 "-e", str(state_dir / "error.log")])

    def listening() -> bool:
        if not proc.alive():
            raise RuntimeError(f"nginx exited:\n{proc.log_tail()}\n{(state_dir / 'error.log').read_text(errors='replace')}")
        with socket.create_connection(("127.0.0.1", listen_port), timeout=1):
            return True

    wait_until(listening, 10, "nginx listening")
    return proc
