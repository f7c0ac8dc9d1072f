# One image for both programs: the training Job runs `python -m training`, the
# predictor Deployment runs the default command, `python -m predictor`.
#
#   docker build -t iris:dev .
#   docker run --rm -e IRIS_MODEL_URI=/models -v "$PWD/models:/models" iris:dev python -m training
#   docker run --rm -e IRIS_MODEL_URI=/models -v "$PWD/models:/models:ro" -p 8080:8080 iris:dev
#
# The dependencies and the project's code are separate layers of the final image,
# so a code change rebuilds, pushes and loads kilobytes, not the whole venv.

# The runtime dependencies, read from pyproject.toml. Their layer below is keyed
# on this list only, so editing the test or lint settings does not reinstall them.
FROM python:3.11-slim AS requirements
COPY pyproject.toml /
RUN python -c 'import tomllib; print(*tomllib.load(open("/pyproject.toml", "rb"))["project"]["dependencies"], sep="\n")' >/requirements.txt

FROM python:3.11-slim AS dependencies

# binutils for strip; it stays in this stage.
RUN apt-get update \
 && apt-get install --yes --no-install-recommends binutils \
 && rm -rf /var/lib/apt/lists/*

# A venv without pip: the base image's pip installs into it (--python).
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv --without-pip /opt/venv
WORKDIR /src

# --only-binary: every dependency is a wheel, so nothing is compiled and no
# compiler is needed. Then drop what never runs:
# - setuptools, there only as grpcio-tools' requirement for generating code;
# - the dependencies' test suites (and their data: joblib's are pickles);
# - the debug symbols of extension modules (not of the vendored libraries in
#   *.libs/, which auditwheel patched and strip would break; each stripped file
#   must still load).
# Bytecode is compiled once, with unchecked hashes: the root filesystem is
# read-only at run time, so Python could not cache it, and a build that rewrites
# file times must not make it stale.
COPY --from=requirements /requirements.txt ./
RUN pip --python /opt/venv/bin/python install --no-compile --only-binary=:all: \
      --requirement requirements.txt \
 && pip --python /opt/venv/bin/python check \
 && pip --python /opt/venv/bin/python uninstall --yes setuptools \
 && find /opt/venv/lib/python3.11/site-packages -depth -type d \
      \( -name tests -o -name test -o -name SelfTest \) -exec rm -rf {} + \
 && find /opt/venv -type f -name '*.so*' ! -path '*.libs/*' \
      -exec sh -c 'objdump --section-headers "$1" | grep -q "\.debug_"' sh {} \; -print >stripped.txt \
 && xargs --no-run-if-empty strip --strip-debug <stripped.txt \
 && /opt/venv/bin/python -c 'import ctypes, sys; [ctypes.CDLL(line.strip()) for line in sys.stdin]' <stripped.txt \
 && /opt/venv/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/venv/lib

FROM dependencies AS project
COPY pyproject.toml README.md ./
COPY training ./training
COPY predictor ./predictor
RUN pip --python /opt/venv/bin/python install --no-compile --no-deps . \
 && cd /opt/venv/lib/python3.11/site-packages \
 && /opt/venv/bin/python -m compileall -q --invalidation-mode unchecked-hash training predictor \
 && mkdir /project \
 && cp -a training predictor iris-*.dist-info /project/

FROM python:3.11-slim

# A name for UID 1000; USER stays numeric so Kubernetes can verify runAsNonRoot.
RUN groupadd --gid 1000 iris \
 && useradd --uid 1000 --gid 1000 --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin iris

COPY --from=dependencies /opt/venv /opt/venv
COPY --from=project /project/ /opt/venv/lib/python3.11/site-packages/

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

ARG REVISION=unknown
LABEL org.opencontainers.image.title="iris" \
      org.opencontainers.image.description="Train, publish and serve a scikit-learn Iris classifier on Kubernetes with KServe" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.revision="$REVISION" \
      org.opencontainers.image.licenses="Apache-2.0"
