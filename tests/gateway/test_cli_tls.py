"""The console script: HTTPS by default with a generated certificate, loud failures for bad TLS or flags."""

from __future__ import annotations

import ssl
import subprocess
import sys

import httpx
from cryptography import x509

from tests.fixtures.processes import REPO, free_port, wait_until


def run_gateway(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    env = {"OMNIKUBE_CONFIG": str(tmp_path / "none.json"), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "omnikube_gateway.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def test_a_missing_configured_certificate_is_a_loud_nonzero_exit(tmp_path):
    result = run_gateway(["--ssl-certfile", str(tmp_path / "cert.pem"), "--ssl-keyfile", str(tmp_path / "key.pem"),
                          "--data-dir", str(tmp_path / "data")], tmp_path)
    assert result.returncode != 0
    assert "TLS file(s) not found" in result.stderr and "cert.pem" in result.stderr


def test_bad_worker_lists_and_conflicting_sources_are_refused(tmp_path):
    assert "port 'x' is not a number" in run_gateway(["--http", "--workers", "localhost:x"], tmp_path).stderr
    conflict = run_gateway(["--http", "--workers", "a:1", "--deployment", "demo"], tmp_path)
    assert conflict.returncode != 0 and "choose one worker source" in conflict.stderr


def test_https_is_the_default_with_a_self_signed_certificate_generated_once(tmp_path):
    port = free_port()
    data = tmp_path / "data"
    log = open(tmp_path / "gateway.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "omnikube_gateway.cli", "--host", "127.0.0.1", "--port", str(port),
                                "--workers", ",", "--data-dir", str(data)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                               env={"OMNIKUBE_CONFIG": str(tmp_path / "none.json"), "PATH": "/usr/bin:/bin"})
    try:
        def up() -> bool:
            try:
                return httpx.get(f"https://127.0.0.1:{port}/healthz", verify=False, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, 30, "the HTTPS gateway")
        cert = x509.load_pem_x509_certificate((data / "certs" / "cert.pem").read_bytes())
        served = x509.load_pem_x509_certificate(ssl.get_server_certificate(("127.0.0.1", port)).encode())
        assert served == cert
        assert "omnikube-gateway" in cert.subject.rfc4514_string()
        assert (data / "certs" / "key.pem").stat().st_mode & 0o077 == 0
    finally:
        process.terminate()
        process.wait(timeout=10)
