"""The certificates `mapperctl stack up --tls` and `mapperctl stack tls` issue verify as TLS does."""

from __future__ import annotations

import socket
import ssl
import stat
import threading

import pytest

from llama_mapper.cli.main import main
from llama_mapper.platform.tls import local_tls


def test_the_server_certificate_verifies_for_every_name_and_no_other(tmp_path):
    tls = local_tls(tmp_path / "tls", ("registry", "evaluation", "10.0.0.7"))
    assert stat.S_IMODE(tls.key_file.stat().st_mode) == 0o600
    context = ssl.create_default_context(cafile=str(tls.ca_file))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tls.cert_file, tls.key_file)  # the pair matches

    def handshake(name: str) -> None:
        a, b = socket.socketpair()
        with a, b:
            accepted = threading.Thread(target=lambda: _serve(server, b), daemon=True)
            accepted.start()
            try:
                with context.wrap_socket(a, server_hostname=name):
                    pass
            finally:
                accepted.join(5)

    for name in ("registry", "evaluation", "10.0.0.7"):
        handshake(name)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake("validation")


def _serve(server: ssl.SSLContext, sock) -> None:
    try:
        with server.wrap_socket(sock, server_side=True):
            pass
    except (ssl.SSLError, OSError):
        pass  # the client refused the certificate


def test_the_same_directory_keeps_its_ca(tmp_path):
    first = local_tls(tmp_path)
    ca = first.ca_file.read_bytes()
    assert local_tls(tmp_path).ca_file.read_bytes() == ca


def test_mapperctl_stack_tls_refuses_to_overwrite_a_ca(tmp_path, capsys):
    out = tmp_path / "deploy-tls"
    assert main(["stack", "tls", "--out", str(out), "--name", "registry"]) == 0
    assert (out / "ca.pem").exists()
    assert main(["stack", "tls", "--out", str(out), "--name", "registry"]) != 0
    assert "already holds a CA" in capsys.readouterr().err
