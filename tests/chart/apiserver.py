"""A small Kubernetes API server for the chart's keys Job: the Secrets of one
namespace over TLS on 127.0.0.1, a CA made for it, and one ServiceAccount token.

It answers as the real API server does for the calls the Job makes: GET a Secret
(200, 404), POST one (201, 409 when it exists), 401 for a wrong token and 403 for a
verb the test forbids, each with a Status body. Every request is recorded.
"""

from __future__ import annotations

import json
import secrets
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.chart.pods import describe
from tests.chart.render import Manifest, Manifests

HOST = "127.0.0.1"
# What a pod's ServiceAccount volume holds, under /var/run/secrets/kubernetes.io/.
TOKEN_FILE = "token"
CA_FILE = "ca.crt"
KEYS_JOB_SECONDS = 30


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate it signed for 127.0.0.1: (ca, cert, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = directory / "ca.key", directory / CA_FILE
    key, request, cert = (
        directory / "server.key",
        directory / "server.csr",
        directory / "server.crt",
    )
    extensions = directory / "server.ext"
    extensions.write_text(
        f"subjectAltName=IP:{HOST}\nextendedKeyUsage=serverAuth\n"
        "keyUsage=critical,digitalSignature\n"
        "authorityKeyIdentifier=keyid\n"
    )
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    commands = [
        [
            *("openssl", "req", "-x509", *curve, "-keyout", str(ca_key)),
            *("-out", str(ca), "-days", "1", "-subj", "/CN=fake-kubernetes-ca"),
            *("-addext", "basicConstraints=critical,CA:TRUE"),
            *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
        ],
        [
            *("openssl", "req", *curve, "-keyout", str(key), "-out", str(request)),
            *("-subj", "/CN=kube-apiserver"),
        ],
        [
            *("openssl", "x509", "-req", "-in", str(request), "-CA", str(ca)),
            *("-CAkey", str(ca_key), "-CAcreateserial", "-out", str(cert)),
            *("-days", "1", "-extfile", str(extensions)),
        ],
    ]
    for command in commands:
        subprocess.run(command, check=True, capture_output=True)
    return ca, cert, key


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    status: int


@dataclass
class ApiServer:
    """The state the server answers from; tests set ``secrets`` and ``forbidden``."""

    namespace: str
    account_dir: Path
    token: str
    port: int = 0
    secrets: dict[str, Manifest] = field(default_factory=dict)
    # Verbs ("get", "create") answered 403, as RBAC without the Role would.
    forbidden: set[str] = field(default_factory=set)
    # A Secret that appears just before a create, as if another run won the race:
    # the create then answers 409.
    created_elsewhere: Manifest | None = None
    calls: list[Call] = field(default_factory=list)

    def environment(self) -> dict[str, str]:
        """The variables the kubelet gives every container to find the API."""
        return {
            "KUBERNETES_SERVICE_HOST": HOST,
            "KUBERNETES_SERVICE_PORT": str(self.port),
        }

    def answer(
        self, method: str, path: str, authorization: str, body: bytes
    ) -> tuple[int, dict[str, Any]]:
        collection = f"/api/v1/namespaces/{self.namespace}/secrets"
        verb = {"GET": "get", "POST": "create"}.get(method, method.lower())
        name = path.removeprefix(collection + "/") if method == "GET" else ""
        if authorization != f"Bearer {self.token}":
            return _status(401, "Unauthorized", "Unauthorized")
        if not path.startswith(collection) or (method == "GET" and "/" in name):
            return _status(404, "NotFound", f"the server could not find {path}")
        if verb in self.forbidden:
            return _status(
                403,
                "Forbidden",
                f'secrets is forbidden: User "system:serviceaccount:{self.namespace}:'
                f'keys" cannot {verb} resource "secrets" in API group "" in the '
                f'namespace "{self.namespace}"',
            )
        if method == "GET":
            if name in self.secrets:
                return 200, self.secrets[name]
            return _status(404, "NotFound", f'secrets "{name}" not found')
        if method == "POST" and path == collection:
            secret: Manifest = json.loads(body)
            name = secret["metadata"]["name"]
            if self.created_elsewhere is not None:
                self.secrets[name] = self.created_elsewhere
            if name in self.secrets:
                return _status(409, "AlreadyExists", f'secrets "{name}" already exists')
            self.secrets[name] = secret
            return 201, secret
        return _status(405, "MethodNotAllowed", f"{method} {path}")


def _status(code: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure"}
    return code, {**body, "message": message, "reason": reason, "code": code}


@contextmanager
def serving(directory: Path, namespace: str) -> Iterator[ApiServer]:
    """An ApiServer on 127.0.0.1; its ``account_dir`` holds the token and the CA."""
    account_dir = directory / "serviceaccount"
    _, cert, key = make_certificates(account_dir)
    api = ApiServer(namespace, account_dir, secrets.token_urlsafe(24))
    (account_dir / TOKEN_FILE).write_text(api.token + "\n")

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            status, answer = api.answer(
                self.command, self.path, self.headers.get("Authorization", ""), body
            )
            api.calls.append(Call(self.command, self.path, status))
            encoded = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(encoded)))
            self.end_headers()
            self.wfile.write(encoded)

        do_GET = do_POST = _serve  # noqa: N815 - http.server's naming

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((HOST, 0), Handler)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    api.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def keys_job(manifests: Manifests) -> Manifest | None:
    """The Job that makes the bundled MinIO's keys, if the chart rendered one."""
    for job in manifests.of_kind("Job"):
        labels = job["metadata"].get("labels", {})
        if labels.get("app.kubernetes.io/component") == "minio-keys":
            return job
    return None


def run_keys_job(
    job: Manifest, manifests: Manifests, api: ApiServer
) -> subprocess.CompletedProcess[str]:
    """The Job's container run as a process, as rendered, against ``api``: its
    program and arguments, its environment, and the token and CA a pod would mount."""
    container = describe(job, manifests).container()
    argv = (
        [sys.executable, *container.argv[1:]] if container.argv[0] == "python" else []
    )
    assert argv, f"the keys Job runs {container.argv[:1]}, not the image's python"
    return subprocess.run(
        [*argv, f"--service-account-dir={api.account_dir}"],
        env={**container.environment, **api.environment()},
        capture_output=True,
        text=True,
        timeout=KEYS_JOB_SECONDS,
        check=False,
    )


def with_objects(manifests: Manifests, objects: Mapping[str, Manifest]) -> Manifests:
    """The rendered objects and what the API server holds besides, as one cluster."""
    return Manifests((*manifests.objects, *objects.values()))
