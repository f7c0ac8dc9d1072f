# One image for both programs: the training Job runs `python -m training`, the
# predictor Deployment runs the default command, `python -m predictor`.
#
#   docker build -t iris:dev .
#   docker run --rm -e IRIS_MODEL_URI=/models -v "$PWD/models:/models" iris:dev python -m training
#   docker run --rm -e IRIS_MODEL_URI=/models -v "$PWD/models:/models:ro" -p 8080:8080 iris:dev
#
# The dependencies and the project's code are separate layers of the final image,
# so a code change rebuilds, pushes and loads kilobytes, not the whole venv. The
# dependencies are requirements/runtime.txt's pins, hash-checked; a CycloneDX SBOM
# of the image's Python environment is at /usr/share/sbom/iris.cdx.json. The release
# workflow passes VERSION, REVISION and SOURCE for the OCI labels.

FROM python:3.11-slim AS dependencies

# binutils for strip, and on arm64 a C compiler for psutil: kserve requires psutil<6,
# and psutil 5.9 has no arm64 wheel. Both stay in this stage.
ARG TARGETARCH
RUN apt-get update \
 && apt-get install --yes --no-install-recommends binutils \
      $(if [ "$TARGETARCH" = arm64 ]; then echo gcc libc6-dev; fi) \
 && rm -rf /var/lib/apt/lists/*

# A venv without pip: the base image's pip installs into it (--python).
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv --without-pip /opt/venv
WORKDIR /src

# --require-hashes: exactly the locked files. --only-binary: every dependency is a
# wheel (psutil on arm64 aside), so nothing is compiled. Then drop what never runs:
# - setuptools, there only as grpcio-tools' requirement for generating code;
# - the dependencies' test suites (and their data: joblib's are pickles);
# - the debug symbols of extension modules (not of the vendored libraries in
#   *.libs/, which auditwheel patched and strip would break; each stripped file
#   must still load).
# Bytecode is compiled once, with unchecked hashes: the root filesystem is
# read-only at run time, so Python could not cache it, and a build that rewrites
# file times must not make it stale.
COPY requirements/runtime.txt ./
RUN pip --python /opt/venv/bin/python install --no-compile --require-hashes \
      --only-binary=:all: $(if [ "$TARGETARCH" = arm64 ]; then echo --no-binary=psutil; fi) \
      --requirement runtime.txt \
 && pip --python /opt/venv/bin/python check \
 && pip --python /opt/venv/bin/python uninstall --yes setuptools \
 && find /opt/venv/lib/python3.11/site-packages -depth -type d \
      \( -name tests -o -name test -o -name SelfTest \) -exec rm -rf {} + \
 && find /opt/venv -type f -name '*.so*' ! -path '*.libs/*' \
      -exec sh -c 'objdump --section-headers "$1" | grep -q "\.debug_"' sh {} \; -print >stripped.txt \
 && xargs --no-run-if-empty strip --strip-debug <stripped.txt \
 && /opt/venv/bin/python -c 'import ctypes, sys; [ctypes.CDLL(line.strip()) for line in sys.stdin]' <stripped.txt \
 && /opt/venv/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/venv/lib

# The project, built by the locked setuptools (reinstalled here: the stage above
# removed it) rather than one fetched for an isolated build.
FROM dependencies AS project
RUN pip --python /opt/venv/bin/python install --no-compile --require-hashes \
      --only-binary=:all: --requirement runtime.txt
COPY pyproject.toml README.md ./
COPY training ./training
COPY predictor ./predictor
RUN pip --python /opt/venv/bin/python install --no-compile --no-deps \
      --no-build-isolation . \
 && cd /opt/venv/lib/python3.11/site-packages \
 && /opt/venv/bin/python -m compileall -q --invalidation-mode unchecked-hash training predictor \
 && mkdir /project \
 && cp -a training predictor iris-*.dist-info /project/

# The SBOM generator, in a venv of its own: it never reaches the final image.
FROM python:3.11-slim AS sbom-tool
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
COPY requirements/sbom.txt /
RUN python -m venv --without-pip /opt/sbom-tool \
 && pip --python /opt/sbom-tool/bin/python install --no-compile --require-hashes \
      --only-binary=:all: --requirement /sbom.txt

# The SBOM of the final image's Python environment, read from that environment laid
# out as the final stage lays it out; reproducible: no timestamp, no random serial.
FROM dependencies AS sbom
COPY --from=project /project/ /opt/venv/lib/python3.11/site-packages/
COPY --from=sbom-tool /opt/sbom-tool /opt/sbom-tool
COPY pyproject.toml ./
RUN /opt/sbom-tool/bin/cyclonedx-py environment --pyproject pyproject.toml \
      --mc-type application --output-reproducible --output-format JSON \
      --output-file /iris.cdx.json /opt/venv/bin/python

FROM python:3.11-slim

# A name for UID 1000; USER stays numeric so Kubernetes can verify runAsNonRoot.
RUN groupadd --gid 1000 iris \
 && useradd --uid 1000 --gid 1000 --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin iris

COPY --from=dependencies /opt/venv /opt/venv
COPY --from=project /project/ /opt/venv/lib/python3.11/site-packages/
COPY --from=sbom /iris.cdx.json /usr/share/sbom/iris.cdx.json

# /tmp (an emptyDir) is the only writable path when the root filesystem is
# read-only: HOME and the working directory point there. PYTHONSAFEPATH keeps
# that writable directory off sys.path.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONSAFEPATH=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp
WORKDIR /tmp
USER 1000:1000
EXPOSE 8080
CMD ["python", "-m", "predictor"]

# Set by the release workflow (and tests/image/build.sh): the version the tag names,
# the commit, and the repository's URL.
ARG VERSION=unknown
ARG REVISION=unknown
ARG SOURCE=unknown
# podman's layer cache keys a LABEL step on its text, not on the values of the ARGs
# it expands, but a RUN step on both: this empty step makes another revision miss
# the cache, so the labels below are never a previous build's.
RUN true
LABEL org.opencontainers.image.title="iris" \
      org.opencontainers.image.description="Train, publish and serve a scikit-learn Iris classifier on Kubernetes with KServe" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$REVISION" \
      org.opencontainers.image.source="$SOURCE" \
      org.opencontainers.image.url="$SOURCE" \
      org.opencontainers.image.licenses="Apache-2.0"
