"""Create the bundled MinIO's key Secret once, with random keys; never change it.

The chart renders no keys (``helm template`` must give the same bytes every time, and
Argo CD's render cannot read a Secret back), so this runs as a Job in the iris image:
it reads the Secret and creates it only if it is missing. The pods that read the keys
wait for it: the kubelet retries a missing Secret until it exists.

Standard library only. The Kubernetes API is found as in-cluster clients find it: the
KUBERNETES_SERVICE_HOST/PORT variables the kubelet always sets, and the pod's
ServiceAccount token and CA under --service-account-dir.

Exit codes: 0 the Secret exists (created now, or before and left alone); 2 bad usage;
3 forbidden (the Role or its binding is missing); 4 the API answered something else or
was unreachable (the Job retries); 5 the existing Secret lacks a key MinIO needs.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import secrets
import ssl
import string
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

logger = logging.getLogger("minio_keys")

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
EXIT_FORBIDDEN = 3
EXIT_API = 4
EXIT_INCOMPLETE = 5
TIMEOUT_SECONDS = 10
_LOWER_ALNUM = string.ascii_lowercase + string.digits
_ALNUM = string.ascii_letters + string.digits


class KeysError(Exception):
    """The Secret could not be made sure of; ``status`` is the exit code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Api:
    """The few calls this program makes, with the pod's ServiceAccount token."""

    def __init__(self, host: str, port: str, account_dir: Path) -> None:
        # An IPv6 service address needs brackets in a URL.
        self.base = (
            f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        )
        self.token = (account_dir / "token").read_text().strip()
        self.tls = ssl.create_default_context(cafile=str(account_dir / "ca.crt"))

    def call(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - an https URL built above
            self.base + path, data=data, method=method
        )
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(  # noqa: S310
                request, timeout=TIMEOUT_SECONDS, context=self.tls
            ) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            try:
                answer = json.loads(error.read() or b"{}")
            except ValueError:
                answer = {}
            return error.code, answer
        except (OSError, ValueError) as error:
            raise KeysError(
                EXIT_API, f"the API at {self.base} failed: {error}"
            ) from error


def random_keys() -> tuple[str, str]:
    """An access key id MinIO accepts (3+ characters) and a 40-character secret key."""
    access = "iris-" + "".join(secrets.choice(_LOWER_ALNUM) for _ in range(12))
    secret = "".join(secrets.choice(_ALNUM) for _ in range(40))
    return access, secret


def _refused(status: int, verb: str, what: str, answer: dict[str, Any]) -> KeysError:
    reason = answer.get("message") or answer.get("reason") or "no reason given"
    if status in (401, 403):
        return KeysError(
            EXIT_FORBIDDEN,
            f"forbidden to {verb} {what} (HTTP {status}): {reason}; the chart's Role "
            "must allow get on this Secret and create on secrets, bound to the Job's "
            "ServiceAccount",
        )
    return KeysError(EXIT_API, f"{verb} {what}: HTTP {status}: {reason}")


def ensure_secret(
    api: Api,
    namespace: str,
    name: str,
    keys: tuple[str, str],
    labels: dict[str, str],
) -> str:
    """Create the Secret unless it exists; "created" or "exists"."""
    what = f"Secret {namespace}/{name}"
    path = f"/api/v1/namespaces/{namespace}/secrets"
    status, answer = api.call("GET", f"{path}/{name}")
    if status == 200:
        missing = [key for key in keys if key not in (answer.get("data") or {})]
        if missing:
            raise KeysError(
                EXIT_INCOMPLETE,
                f"{what} exists without the keys {missing}: add them, delete the "
                "Secret to have new keys made, or name another in "
                "storage.s3.existingSecret",
            )
        return "exists"
    if status != 404:
        raise _refused(status, "get", what, answer)
    access, secret = random_keys()
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "type": "Opaque",
        "data": {
            keys[0]: base64.b64encode(access.encode()).decode(),
            keys[1]: base64.b64encode(secret.encode()).decode(),
        },
    }
    status, answer = api.call("POST", path, body)
    if status == 201:
        return "created"
    # Another run created it between the read and the create: theirs stands.
    if status == 409:
        return "exists"
    raise _refused(status, "create", what, answer)


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--secret", required=True, help="the Secret's name")
    parser.add_argument("--access-key-id-key", required=True)
    parser.add_argument("--secret-access-key-key", required=True)
    parser.add_argument(
        "--label", action="append", default=[], help="key=value, for the Secret"
    )
    parser.add_argument("--service-account-dir", default=SERVICE_ACCOUNT_DIR)
    arguments = parser.parse_args(argv)
    if any("=" not in label for label in arguments.label):
        parser.error("--label takes key=value")
    return arguments


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    arguments = parse_arguments(argv)
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        logger.error("error=no_api reason=KUBERNETES_SERVICE_HOST/PORT are not set")
        return EXIT_API
    labels = dict(label.split("=", 1) for label in arguments.label)
    keys = (arguments.access_key_id_key, arguments.secret_access_key_key)
    try:
        api = Api(host, port, Path(arguments.service_account_dir))
        outcome = ensure_secret(
            api, arguments.namespace, arguments.secret, keys, labels
        )
    except OSError as error:
        logger.error("error=no_service_account reason=%s", error)
        return EXIT_API
    except KeysError as error:
        logger.error("error=secret_not_ensured exit=%d reason=%s", error.status, error)
        return error.status
    logger.info(
        "secret=%s/%s outcome=%s", arguments.namespace, arguments.secret, outcome
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
