"""A self-signed certificate for 127.0.0.1, for tests that need TLS."""

from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed_cert(openssl: str, directory: Path, name: str = "cert") -> tuple[str, str]:
    """(certificate, key) paths: valid one day, for CN and SAN IP 127.0.0.1."""
    cert, key = str(directory / f"{name}.pem"), str(directory / "key.pem")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", key, "-out", cert],
        check=True, capture_output=True,
    )
    return cert, key
