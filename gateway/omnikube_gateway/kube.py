"""A minimal Kubernetes API client: credentials from a kubeconfig or the pod's service account,
requests through httpx (async, no extra dependency).

Only what discovery needs: authenticated GETs and streamed watches against the API server. The
service-account token is re-read before each request, because bound tokens are rotated on disk.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeConfigError(RuntimeError):
    """No usable credentials: the message says what was looked for."""


@dataclass
class KubeAuth:
    server: str
    ssl_context: ssl.SSLContext | bool
    token: str | None = None
    token_file: Path | None = None
    namespace: str | None = None

    def headers(self) -> dict[str, str]:
        token = self.token
        if self.token_file is not None:
            token = self.token_file.read_text().strip()
        return {"Authorization": f"Bearer {token}"} if token else {}

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.server, verify=self.ssl_context, timeout=httpx.Timeout(10.0))


def load_auth(kubeconfig: str | None = None) -> KubeAuth:
    """In order: an explicit kubeconfig; the pod's service account; $KUBECONFIG; ~/.kube/config.

    Blocking (reads files): call it through `asyncio.to_thread`.
    """
    if kubeconfig:
        return _from_kubeconfig(Path(kubeconfig))
    if os.environ.get("KUBERNETES_SERVICE_HOST") and (SA_DIR / "token").exists():
        return _in_cluster()
    for candidate in filter(None, [os.environ.get("KUBECONFIG", "").split(os.pathsep)[0], str(Path.home() / ".kube/config")]):
        if Path(candidate).exists():
            return _from_kubeconfig(Path(candidate))
    raise KubeConfigError("no kubeconfig given, not in a cluster, and neither $KUBECONFIG nor ~/.kube/config exists")


def _in_cluster() -> KubeAuth:
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    host = f"[{host}]" if ":" in host else host
    context = ssl.create_default_context(cafile=str(SA_DIR / "ca.crt"))
    namespace_file = SA_DIR / "namespace"
    namespace = namespace_file.read_text().strip() if namespace_file.exists() else None
    return KubeAuth(f"https://{host}:{port}", context, token_file=SA_DIR / "token", namespace=namespace)


def _from_kubeconfig(path: Path) -> KubeAuth:
    try:
        doc: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise KubeConfigError(f"{path}: cannot read kubeconfig: {exc}") from exc
    base = path.parent

    def named(kind: str, name: str) -> dict[str, Any]:
        for item in doc.get(kind + "s") or []:
            if item.get("name") == name:
                return item.get(kind) or {}
        raise KubeConfigError(f"{path}: no {kind} named {name!r}")

    context = named("context", doc.get("current-context") or "")
    cluster = named("cluster", context.get("cluster", ""))
    user = named("user", context.get("user", "")) if context.get("user") else {}
    server = cluster.get("server")
    if not server:
        raise KubeConfigError(f"{path}: cluster has no server")

    if cluster.get("insecure-skip-tls-verify"):
        ssl_context: ssl.SSLContext | bool = False
    else:
        ssl_context = ssl.create_default_context()
        if cluster.get("certificate-authority-data"):
            ssl_context.load_verify_locations(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        elif cluster.get("certificate-authority"):
            ssl_context.load_verify_locations(cafile=str(base / cluster["certificate-authority"]))
    cert = _material(user, "client-certificate", base)
    key = _material(user, "client-key", base)
    if cert and key:
        if ssl_context is False:
            ssl_context = ssl.create_default_context()
            ssl_context.check_hostname, ssl_context.verify_mode = False, ssl.CERT_NONE
        ssl_context.load_cert_chain(cert, key)
    token_file = Path(base / user["tokenFile"]) if user.get("tokenFile") else None
    return KubeAuth(server.rstrip("/"), ssl_context, token=user.get("token"), token_file=token_file, namespace=context.get("namespace"))


def _material(user: dict[str, Any], key: str, base: Path) -> str | None:
    if user.get(f"{key}-data"):
        handle = tempfile.NamedTemporaryFile(prefix="omnikube-kube-", suffix=".pem", delete=False)
        with handle:
            handle.write(base64.b64decode(user[f"{key}-data"]))
        os.chmod(handle.name, 0o600)
        return handle.name
    if user.get(key):
        return str(base / user[key])
    return None
