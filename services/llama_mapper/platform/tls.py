"""A local certificate authority for `mapperctl stack up --tls`: one CA, one server certificate
for 127.0.0.1 and localhost, written once under the var dir (keys mode 0600)."""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LocalTls:
    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_env(self, services: tuple[str, ...]) -> dict[str, str]:
        """Each service serves TLS only (MAPPER_<SERVICE>_TLS_CERT_FILE / _KEY_FILE)."""
        env = {}
        for name in services:
            env[f"MAPPER_{name.upper()}_TLS_CERT_FILE"] = str(self.cert_file)
            env[f"MAPPER_{name.upper()}_TLS_KEY_FILE"] = str(self.key_file)
        return env

    def client_env(self) -> dict[str, str]:
        """Every client checks the services against the local CA."""
        ca = str(self.ca_file)
        return {
            "MAPPER_REGISTRY_CA_FILE": ca,
            "MAPPER_EVALUATION_CA_FILE": ca,
            "MAPPER_VALIDATION_CA_FILE": ca,
            "MAPPER_SERVING_REGISTRY_CA_FILE": ca,
        }


def _san(name: str):
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


LOCAL_NAMES = ("localhost", "127.0.0.1")


def local_tls(
    directory: Path, names: tuple[str, ...] = LOCAL_NAMES, *, days: int = 365
) -> LocalTls:
    """A CA and one server certificate for `names` (DNS names or IP addresses), created on first
    use. The local stack's names are localhost and 127.0.0.1; a compose or Kubernetes deployment
    names its services (`mapperctl tls issue`)."""
    tls = LocalTls(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    if tls.ca_file.exists() and tls.cert_file.exists() and tls.key_file.exists():
        return tls
    if not names:
        raise ValueError("a server certificate needs at least one name")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llama-mapper local CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_san(name) for name in names]), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    tls.ca_file.write_bytes(ca.public_bytes(pem))
    tls.cert_file.write_bytes(cert.public_bytes(pem))
    _write_private(
        tls.key_file,
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    return tls
