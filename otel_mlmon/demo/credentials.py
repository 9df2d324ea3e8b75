"""The stack's secrets: the processor's bearer token and a throwaway CA with server and client certificates.

Used by the native stack (:mod:`otel_mlmon.demo.stack`), the tests, and the compose stack's one-shot ``secrets``
service: ``python -m otel_mlmon.demo.credentials DIR HOST…``.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Certificates:
    """PEM files of a throwaway CA, a server certificate it signed and a client certificate it signed."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certificates(folder: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
                      days: int = 30) -> Certificates:
    """A CA and server/client certificates for ``hosts`` (IP or DNS names), made with the ``openssl`` command
    (P-256 keys); for the native stack, the compose stack's one-shot ``secrets`` service and the tests."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command is needed to make the stack's TLS certificates "
                           "(apt-get install openssl)")
    folder.mkdir(parents=True, exist_ok=True)

    def run(*argv: str) -> None:
        done = subprocess.run([openssl, *argv], cwd=folder, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"openssl {' '.join(argv[:2])} failed: {done.stderr.strip()[-500:]}")

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *key, "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", str(days),
        "-subj", "/CN=otel-mlmon CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    names = ",".join(("IP:" if _is_ip(h) else "DNS:") + h for h in hosts)
    for role, usage in (("server", "serverAuth"), ("client", "clientAuth")):
        (folder / f"{role}.ext").write_text(f"basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n" +
                                            (f"subjectAltName={names}\n" if role == "server" else ""))
        run("req", *key, "-keyout", f"{role}-key.pem", "-out", f"{role}.csr", "-subj", f"/CN=otel-mlmon {role}")
        run("x509", "-req", "-in", f"{role}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-set_serial",
            str(random.getrandbits(63)), "-days", str(days), "-extfile", f"{role}.ext", "-out", f"{role}.pem")
    return Certificates(folder / "ca.pem", folder / "server.pem", folder / "server-key.pem",
                        folder / "client.pem", folder / "client-key.pem")


def write_secrets(folder: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> tuple[Path, Certificates]:
    """The processor's bearer token (``folder/token``, 64 hex digits) and certificates for ``hosts`` (see
    :func:`make_certificates`), made once: files already there are kept (delete them to rotate)."""
    import secrets

    folder.mkdir(parents=True, exist_ok=True)
    token = folder / "token"
    if not token.exists():
        token.write_text(secrets.token_hex(32) + "\n")
        token.chmod(0o644)  # the Collector's container user reads it too (compose); only its mounts see it
    if (folder / "server.pem").exists():
        certs = Certificates(folder / "ca.pem", folder / "server.pem", folder / "server-key.pem",
                             folder / "client.pem", folder / "client-key.pem")
    else:
        certs = make_certificates(folder, hosts)
    return token, certs


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


if __name__ == "__main__":  # the compose stack's one-shot `secrets` service
    made, _ = write_secrets(Path(sys.argv[1]), tuple(sys.argv[2:]) or ("127.0.0.1", "localhost"))
    print(f"the processor's token and TLS files are in {made.parent}")
