"""TLS for the gateway: HTTPS by default, as browsers grant microphone and camera only to secure
pages.

- Configured cert/key files must exist: a missing one is a loud error and a non-zero exit (the
  original logged and exited with status 0).
- Nothing configured: a self-signed pair is generated once under `<data_dir>/certs/` (CN
  `omnikube-gateway`, SANs localhost/127.0.0.1/::1 and the host name, 365 days) and reused.
- `--http` serves plain HTTP (in a cluster, behind an Ingress that terminates TLS).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


class TLSConfigError(RuntimeError):
    pass


def resolve(certfile: str | None, keyfile: str | None, data_dir: Path) -> tuple[str, str]:
    """Paths of the cert and key to serve with, generating a self-signed pair if none is configured."""
    if certfile or keyfile:
        missing = [p or "(not given)" for p in (certfile, keyfile) if not p or not Path(p).is_file()]
        if missing:
            raise TLSConfigError(
                f"TLS file(s) not found: {', '.join(str(m) for m in missing)}. Give both --ssl-certfile and "
                "--ssl-keyfile, omit both to use a generated self-signed certificate, or pass --http."
            )
        return str(certfile), str(keyfile)
    cert, key = data_dir / "certs" / "cert.pem", data_dir / "certs" / "key.pem"
    if not (cert.is_file() and key.is_file()):
        generate_self_signed(cert, key)
    return str(cert), str(key)


def generate_self_signed(cert_path: Path, key_path: Path, days: int = 365) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "omnikube-gateway")])
    hosts = {"localhost", socket.gethostname()}
    sans: list[x509.GeneralName] = [x509.DNSName(h) for h in sorted(hosts)]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_bytes = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_bytes)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
