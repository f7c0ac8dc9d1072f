#!/usr/bin/env bash
# Build a stand-in for docker.io/library/python:3.11-slim from Debian bookworm
# packages (mmdebstrap) and load it into podman (podman import). No container
# registry is reachable here; Debian's mirrors are. Does nothing if the image is
# already there, unless --force.
#
# Usage: tests/image/build-base.sh [--force]
# Env:   BASE_IMAGE       the tag to build (default docker.io/library/python:3.11-slim)
#        MIRROR           (default http://deb.debian.org/debian)
#        SECURITY_MIRROR  (default http://deb.debian.org/debian-security)
#        EXTRA_CA_DIR     *.crt files added to the image's trust store, because this
#                         network re-signs TLS (default /usr/local/share/ca-certificates)
#        CONTAINERS_CONF  passed through to podman
set -euo pipefail

tag="${BASE_IMAGE:-docker.io/library/python:3.11-slim}"
mirror="${MIRROR:-http://deb.debian.org/debian}"
security_mirror="${SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
extra_ca_dir="${EXTRA_CA_DIR:-/usr/local/share/ca-certificates}"
suite=bookworm # Debian 12, whose python3 is 3.11, as python:3.11-slim's base is

if [ "${1:-}" != --force ] && podman image exists "$tag"; then
  echo "build-base: $tag exists, kept (--force rebuilds it)"
  exit 0
fi
command -v mmdebstrap >/dev/null || {
  echo "build-base: mmdebstrap is missing: apt-get install -y mmdebstrap" >&2
  exit 1
}

work="$(mktemp -d "${TMPDIR:-/tmp}/iris-base.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir "$work/ca"
if [ -d "$extra_ca_dir" ]; then
  find "$extra_ca_dir" -maxdepth 1 -name '*.crt' -exec cp {} "$work/ca/" \;
fi

# As debian:bookworm-slim: no recommends, docs, man pages or locales.
mmdebstrap \
  --variant=minbase \
  --mode=root \
  --format=tar \
  --aptopt='Acquire::Retries "3"' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --include=ca-certificates,netbase,tzdata,python3,python3-venv,python3-pip \
  --customize-hook="cp -r $work/ca/. \"\$1/usr/local/share/ca-certificates/\"" \
  --customize-hook='chroot "$1" update-ca-certificates' \
  --customize-hook='for n in python python3 python3.11; do ln -sf /usr/bin/python3.11 "$1/usr/local/bin/$n"; done' \
  --customize-hook='for n in pip pip3; do ln -sf /usr/bin/pip3 "$1/usr/local/bin/$n"; done' \
  --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
  "$suite" "$work/rootfs.tar" \
  "deb $mirror $suite main" \
  "deb $mirror $suite-updates main" \
  "deb $security_mirror $suite-security main"

old_id="$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)"
# The same image configuration as python:3.11-slim.
podman import \
  --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --message "stand-in for python:3.11-slim, built by mmdebstrap from Debian $suite" \
  "$work/rootfs.tar" "$tag"
if [ -n "$old_id" ] && [ "$old_id" != "$(podman image inspect --format '{{.Id}}' "$tag")" ]; then
  podman rmi "$old_id" >/dev/null 2>&1 || true # still used by other images: kept
fi

podman run --rm --pull=never "$tag" python -c 'import ssl, sys, venv; print(sys.version)'
podman image ls "$tag"
