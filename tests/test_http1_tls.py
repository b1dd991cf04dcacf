"""The lean HTTP/1.1 client over TLS, as it talks to api.openai.com: the certificate is verified
(a server the client's trust store does not vouch for is never sent the request), and one
connection carries several calls."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import json
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.engines.http1 import Http1, NotSent


def _certificate(directory):
    """A self-signed certificate for localhost and 127.0.0.1, and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so that reuse can be seen

    def _answer(self, payload: dict) -> None:
        body = json.dumps({**payload, "path": self.path, "port": self.client_address[1]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._answer({"auth": self.headers.get("Authorization")})

    def do_POST(self):
        self._answer({"echo": json.loads(self.rfile.read(int(self.headers["Content-Length"])))})

    def log_message(self, *args):
        pass


@pytest.fixture
def tls_server(tmp_path):
    cert_path, key_path = _certificate(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://localhost:{server.server_address[1]}/v1", cert_path
    server.shutdown()
    server.server_close()


def test_calls_go_over_verified_tls_on_one_kept_alive_connection(tls_server):
    base_url, cert_path = tls_server
    client = Http1(base_url, {"Authorization": "Bearer sk-test"}, ssl.create_default_context(cafile=str(cert_path)))
    looks = [client.request("GET", "/responses/resp_1", None, 5, 2) for _ in range(3)]
    assert [reply.status_code for reply in looks] == [200, 200, 200]
    answers = [reply.json() for reply in looks]
    assert {a["path"] for a in answers} == {"/v1/responses/resp_1"} and answers[0]["auth"] == "Bearer sk-test"
    assert len({a["port"] for a in answers}) == 1  # one client port: the connection was reused
    created = client.request("POST", "/responses", json.dumps({"model": "m"}).encode(), 5, 2)
    client.close()
    assert created.json()["echo"] == {"model": "m"}


def test_a_server_the_trust_store_does_not_vouch_for_is_never_sent_the_request(tls_server):
    base_url, _ = tls_server
    client = Http1(base_url, {"Authorization": "Bearer sk-test"}, ssl.create_default_context())
    with pytest.raises(NotSent):
        client.request("POST", "/responses", b"{}", 5, 2)
    client.close()
