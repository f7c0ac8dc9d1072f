"""Become a container: ``python -m tests.chart.container_entry SPEC.json``.

Run as root inside the pod's network namespace and a private mount namespace (the
sandbox starts it so), it builds the container's file system and then replaces
itself with the container's program, as the container's user:

- the root is a read-only overlay of this machine's root, under a small top layer
  that holds the mount points, /etc/hosts (the cluster's DNS names), and the
  directories on the way to this machine's Python made traversable (an image's
  Python is readable by every user; this machine's may sit under a private /root);
- each volume is bind-mounted at its mountPath, read-only if the mount says so, and
  the project and its venv are bound back over any volume that covers them;
- then chroot, the user, group and supplementary groups of the securityContext,
  no_new_privs, and exec with exactly the container's environment.

Standard library only: it runs before the program, once per container.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

PR_SET_NO_NEW_PRIVS = 38
PR_CAPBSET_DROP = 24
LAST_CAPABILITY = 40


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def build_root(spec: dict[str, Any]) -> Path:
    stage = Path(spec["stage"])
    layer, root = stage / "layer", stage / "root"
    _mount("-t", "tmpfs", "-o", "mode=0755", "layer", str(layer))
    for directory in spec["traversable"]:
        (layer / directory.lstrip("/")).mkdir(parents=True, exist_ok=True)
        (layer / directory.lstrip("/")).chmod(0o755)
    for volume in spec["mounts"]:
        (layer / volume["path"].lstrip("/")).mkdir(parents=True, exist_ok=True)
    (layer / "etc").mkdir(exist_ok=True)
    (layer / "etc" / "hosts").write_text(spec["hosts"])
    (layer / "etc" / "hostname").write_text(spec["hostname"] + "\n")
    if spec["read_only_root"]:
        options = f"lowerdir={layer}:/"
    else:
        upper = stage / "upper"
        _mount("-t", "tmpfs", "-o", "mode=0755", "upper", str(upper))
        (upper / "data").mkdir()
        (upper / "work").mkdir()
        options = (
            f"lowerdir={layer}:/,upperdir={upper / 'data'},workdir={upper / 'work'}"
        )
    _mount("-t", "overlay", "-o", options, "overlay", str(root))
    for system in ("/dev", "/proc", "/sys"):
        _mount("--rbind", system, str(root / system.lstrip("/")))
    for volume in spec["mounts"]:
        target = str(root / volume["path"].lstrip("/"))
        _mount("--bind", volume["source"], target)
        if volume["read_only"]:
            _mount("-o", "remount,bind,ro", target)
    # What an image would hold (the project and its venv) may sit under a path a
    # volume now covers, as a clone in /tmp does under the pod's /tmp emptyDir:
    # bind it back, read-only, where the program expects it.
    for path in spec["image"]:
        covered = any(
            Path(path).is_relative_to(volume["path"]) for volume in spec["mounts"]
        )
        if covered:
            target = root / path.lstrip("/")
            target.mkdir(parents=True, exist_ok=True)
            _mount("--bind", path, str(target))
            _mount("-o", "remount,bind,ro", str(target))
    return root


def become(spec: dict[str, Any], root: Path) -> None:
    os.chroot(root)
    os.chdir(spec["working_dir"])
    libc = ctypes.CDLL(None, use_errno=True)
    if spec["drop_all_capabilities"]:
        for capability in range(LAST_CAPABILITY + 1):
            libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0)
    if spec["groups"] is not None:
        os.setgroups(spec["groups"])
    if spec["group"] is not None:
        os.setgid(spec["group"])
    if spec["user"] is not None:
        os.setuid(spec["user"])
    if spec["no_new_privileges"] and libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0):
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    root = build_root(spec)
    become(spec, root)
    argv = spec["argv"]
    os.execvpe(argv[0], argv, spec["environment"])  # noqa: S606 - becoming the program


if __name__ == "__main__":
    main(sys.argv[1])
