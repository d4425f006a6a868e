"""Resolved gateway settings: the seed's config.json plus the gateway's own CLI flags.

`load_settings` is the one place where precedence is applied (CLI > config file > defaults); every
other module receives a ready `GatewaySettings` and never reads files or the environment itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omnikube.config import OmniConfig

DEFAULT_CERT_FILE = "certs/cert.pem"
# Presets shipped with the gateway (`<mode>/*.yaml`, data.md §5); a deployment may point elsewhere.
SHIPPED_PRESETS_DIR = Path(__file__).with_name("assets") / "presets"
DEFAULT_KEY_FILE = "certs/key.pem"


@dataclass(frozen=True)
class StaticWorker:
    """One `--workers` entry."""

    host: str
    port: int


@dataclass
class GatewaySettings:
    config: OmniConfig = field(default_factory=OmniConfig)
    host: str = "0.0.0.0"
    port: int = 8006
    # Discovery: a static list, or the worker pods of one OmniDeployment (or a raw selector).
    static_workers: list[StaticWorker] = field(default_factory=list)
    namespace: str | None = None
    deployment: str | None = None
    selector: str | None = None
    kubeconfig: str | None = None
    # Queue.
    max_queue_size: int = 1000
    request_timeout: float = 300.0
    # TLS: None certfile/keyfile means "generate a self-signed pair under data_dir/certs".
    https: bool = True
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    # Data and auth.
    data_dir: Path = Path("data")
    api_keys_file: str | None = None
    admin_keys_file: str | None = None
    lang: str | None = None
    presets_dir: Path = SHIPPED_PRESETS_DIR
    # Health: a live worker is probed this often; an unhealthy one much more often, to re-admit it fast.
    health_interval_s: float = 5.0
    unhealthy_probe_interval_s: float = 0.5
    health_timeout_s: float = 2.0

    @property
    def kubernetes(self) -> bool:
        return bool(self.deployment or self.selector)


def parse_workers(spec: str, base_port: int) -> list[StaticWorker]:
    """Parse `host:port,host:port`; entries are trimmed (the original did not) and a bare host gets
    `base_port + index`."""
    workers: list[StaticWorker] = []
    for index, raw in enumerate(item.strip() for item in spec.split(",")):
        if not raw:
            continue
        host, sep, port = raw.rpartition(":")
        if not sep:
            host, port = raw, str(base_port + index)
        if not host:
            raise ValueError(f"--workers entry {raw!r}: missing host")
        try:
            number = int(port)
        except ValueError:
            raise ValueError(f"--workers entry {raw!r}: port {port!r} is not a number") from None
        if not 0 < number < 65536:
            raise ValueError(f"--workers entry {raw!r}: port out of range")
        workers.append(StaticWorker(host.strip("[]"), number))
    return workers
