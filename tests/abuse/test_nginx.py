"""docs/public-instance.md's set-up, run: its nginx block in front of two `serve --public`
instances on one redis-server, over TLS.

The block is read from the page itself; the test changes only the ports, the certificate (made
here, for 127.0.0.1) and the per-client rate (2/s, burst 4, so the limit is reached in a few
calls). Clients come from distinct loopback addresses (127.0.0.1, .2, .3), which nginx tells apart.
"""
from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import re
import socket
import ssl
import subprocess
import time

import pytest
import requests

from ..conftest import RECIPIENT, ROOT, free_port, require
from ..test_metrics import samples, value

pytestmark = pytest.mark.slow
V3_ROUTE = "/v3/france_travail/statut/identifiant"
V3_DEFAULT = "api_particulier_v3_france_travail_statut_with_identifiant/200_default.yaml"
DOC = ROOT / "docs" / "public-instance.md"


def nginx_block() -> str:
    blocks = re.findall(r"```nginx\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 1, "docs/public-instance.md has one nginx block"
    return blocks[0]


def certificate(folder):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def configure(folder, tls_port, http_port, upstreams, cert, key) -> str:
    block = nginx_block()
    replacements = [
        ("listen 443 ssl;", f"listen 127.0.0.1:{tls_port} ssl;"),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("server 127.0.0.1:8001 ", f"server 127.0.0.1:{upstreams[0]} "),
        ("server 127.0.0.1:8002 ", f"server 127.0.0.1:{upstreams[1]} "),
        ("/etc/ssl/particulier-sandbox/fullchain.pem", str(cert)),
        ("/etc/ssl/particulier-sandbox/privkey.pem", str(key)),
        ("rate=50r/s", "rate=2r/s"),
        ("burst=100", "burst=4"),
    ]
    for old, new in replacements:
        if old in ("listen 80;",) and old not in block:
            continue  # the page may leave the plain-HTTP redirect out
        assert old in block, f"the page's nginx block no longer has {old!r}: update this test with it"
        block = block.replace(old, new)
    temp = "\n".join(f"    {kind}_temp_path {folder / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return (f"daemon off;\nmaster_process off;\npid {folder / 'nginx.pid'};\nerror_log {folder / 'error.log'} info;\n"
            f"events {{ worker_connections 256; }}\n"
            f"http {{\n    access_log {folder / 'access.log'};\n{temp}\n{block}\n}}\n")


class Client:
    """HTTPS through nginx from one loopback address of its own."""

    def __init__(self, port, source, cafile):
        self.port, self.source = port, source
        self.context = ssl.create_default_context(cafile=str(cafile))

    def call(self, method, path, headers=None, body=None):
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, source_address=(self.source, 0),
                                                 context=self.context, timeout=15)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            data = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        finally:
            connection.close()

    def route(self, token):
        status, headers, body = self.call("GET", f"{V3_ROUTE}?identifiant=default&recipient={RECIPIENT}",
                                          {"Authorization": f"Bearer {token}"})
        return status, headers.get("x-sandbox-case"), json.loads(body)


@pytest.fixture
def nginx(tmp_path):
    binary = require("nginx")
    processes = []

    def start(config: str):
        path = tmp_path / "nginx.conf"
        path.write_text(config)
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (tmp_path / kind).mkdir(exist_ok=True)
        checked = subprocess.run([binary, "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(path)],
                                 capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0, checked.stderr
        process = subprocess.Popen([binary, "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(path)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.terminate()
        process.wait(10)


def wait_port(port, process, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, "nginx stopped"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nginx did not listen")


def ping_count(instance) -> float:
    scraped = samples(requests.get(instance.url + "/metrics", timeout=10).text)  # loopback: allowed
    return value(scraped, "sandbox_calls_total", method="GET", route="/api/ping", status="200")


def test_two_public_instances_on_redis_behind_nginx(tmp_path, redis_server, start_server, nginx):
    env = {"SANDBOX_REDIS_URL": redis_server.url, "SANDBOX_PUBLIC": "1", "SANDBOX_TRUSTED_PROXIES": "127.0.0.1",
           "SANDBOX_WORKERS": "1"}
    instances = [start_server(env=env), start_server(env=env)]
    tls_port, http_port = free_port(), free_port()
    cert, key = certificate(tmp_path)
    process = nginx(configure(tmp_path, tls_port, http_port, [i.port for i in instances], cert, key))
    wait_port(tls_port, process)
    base = f"https://127.0.0.1:{tls_port}"

    # a visitor (127.0.0.3): a token, a route, over TLS, with HSTS and https addresses
    visitor = Client(tls_port, "127.0.0.3", cert)
    status, headers, body = visitor.call("POST", "/sandbox/tokens", {"Content-Type": "application/json"},
                                         b'{"ttl": 600}')
    assert status == 201, body
    assert headers["strict-transport-security"] == "max-age=31536000"
    minted = json.loads(body)
    answer = visitor.route(minted["token"])
    assert answer[:2] == (200, V3_DEFAULT)
    status, _, body = visitor.call("GET", "/franceconnect/api/v2/.well-known/openid-configuration")
    assert json.loads(body)["issuer"] == base + "/franceconnect/api/v2"
    status, _, _ = visitor.call("GET", "/metrics")
    assert status == 404, "the proxy keeps /metrics to the instances' own addresses"

    # the other instance knows the token and its revocation (one Redis): revoked through nginx,
    # it is refused by both instances
    status, _, _ = visitor.call("DELETE", f"/sandbox/tokens/{minted['jti']}", {"X-Api-Key": minted["token"]})
    assert status == 204
    for instance in instances:
        refused = requests.get(instance.url + V3_ROUTE, params={"identifiant": "default", "recipient": RECIPIENT},
                               headers={"Authorization": f"Bearer {minted['token']}"}, timeout=10)
        assert refused.status_code == 401 and refused.json()["errors"][0]["code"] == "00105"

    # a client over its per-address limit is refused by nginx, in JSON; another client is not
    bystander = Client(tls_port, "127.0.0.2", cert)
    status, _, body = bystander.call("POST", "/sandbox/tokens", {"Content-Type": "application/json"}, b"{}")
    own = json.loads(body)["token"]
    before = bystander.route(own)
    assert before[:2] == (200, V3_DEFAULT)
    pings = [ping_count(i) for i in instances]  # their start-up checks called it too
    flooder = Client(tls_port, "127.0.0.1", cert)
    statuses, refusal = [], None
    for _ in range(12):  # bounded: rate 2/s, burst 4
        status, headers, body = flooder.call("GET", "/api/ping")
        statuses.append(status)
        if status == 429:
            refusal = (headers.get("content-type"), json.loads(body))
    assert 429 in statuses and statuses[0] == 200, statuses
    assert refusal[0].startswith("application/json") and refusal[1]["error"] == "rate_limited"
    assert bystander.route(own) == before

    # both instances answered through the proxy
    served = [ping_count(i) - before for i, before in zip(instances, pings)]
    assert all(count > 0 for count in served) and sum(served) == statuses.count(200), served
