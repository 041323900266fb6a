"""The containers of a Kubernetes DaemonSet manifest as ``podman run`` arguments (61-podman.sh).

    python .ci/lib/daemonset_podman.py MANIFEST CGROUP2_MOUNT OUTDIR [NAME=VALUE ...]

Writes, per container NAME of the manifest's DaemonSets, NUL-separated lists for a shell's
``mapfile -d ''``: ``OUTDIR/NAME.args`` (podman run options: the pod's hostPID, the
container's securityContext -- privileged, user, capabilities, seccomp and AppArmor profiles,
a read-only root --, its environment with the NAME=VALUE overrides, its memory limit and
hostPath volumes), ``OUTDIR/NAME.command`` (command + args, ``$(NAME)`` in them expanded
from the container's environment as Kubernetes does), ``OUTDIR/NAME.liveness`` (its
livenessProbe's exec command, if any) and ``OUTDIR/NAME.port`` (its first containerPort, if
any); prints the names, one a line.  What a node has and this machine has not:
hostNetwork is left out (the container gets a network namespace of its own: this machine's
is shared with other work, and a port there may be taken), and a hostPath of /sys/fs/cgroup
is the cgroup2 mount given (a node with only cgroup2 mounts it there).
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

import yaml


def podman_args(pod: dict[str, Any], container: dict[str, Any], cgroup2: str, env: dict[str, str]) -> list[str]:
    args: list[str] = []
    if pod.get("hostPID"):
        args.append("--pid=host")
    sc = container.get("securityContext") or {}
    if sc.get("privileged"):
        args.append("--privileged")
    if "runAsUser" in sc:
        args.append(f"--user={sc['runAsUser']}")
    caps = sc.get("capabilities") or {}
    for cap in caps.get("drop") or []:
        args.append(f"--cap-drop={'all' if cap == 'ALL' else 'CAP_' + cap}")
    for cap in caps.get("add") or []:
        args.append(f"--cap-add=CAP_{cap}")
    if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
        args.append("--security-opt=seccomp=unconfined")
    if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
        args.append("--security-opt=apparmor=unconfined")
    if sc.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    values = environment(container, env)
    args += [f"--env={name}={value}" for name, value in values.items()]
    memory = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    if memory:
        args.append(f"--memory={memory.replace('Mi', 'm').replace('Gi', 'g')}")
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod.get("volumes") or [] if "hostPath" in v}
    for mount in container.get("volumeMounts") or []:
        host = host_paths.get(mount["name"])
        if host is None:
            continue
        if host == "/sys/fs/cgroup":
            host = cgroup2
        args.append(f"--volume={host}:{mount['mountPath']}{':ro' if mount.get('readOnly') else ''}")
    return args


def environment(container: dict[str, Any], env: dict[str, str]) -> dict[str, str]:
    values = {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}
    values.update(env)
    return values


def expand(text: str, values: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of command and args: a defined variable's value, $$ a
    literal $, anything else kept as written."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
        lambda m: "$" if m.group(0) == "$$" else values.get(m.group(1), m.group(0)),
        text,
    )


def _write(path: str, items: list[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(item + "\0" for item in items))


def main(argv: list[str]) -> int:
    manifest, cgroup2, outdir, *overrides = argv
    env = dict(o.split("=", 1) for o in overrides)
    os.makedirs(outdir, exist_ok=True)
    with open(manifest, encoding="utf-8") as f:
        for doc in yaml.safe_load_all(f):
            if not doc or doc.get("kind") != "DaemonSet":
                continue
            pod = doc["spec"]["template"]["spec"]
            for container in pod["containers"]:
                name = container["name"]
                base = os.path.join(outdir, name)
                _write(base + ".args", podman_args(pod, container, cgroup2, env))
                values = environment(container, env)
                command = [*(container.get("command") or []), *(container.get("args") or [])]
                _write(base + ".command", [expand(c, values) for c in command])
                liveness = ((container.get("livenessProbe") or {}).get("exec") or {}).get("command")
                if liveness:
                    _write(base + ".liveness", liveness)
                ports = [p["containerPort"] for p in container.get("ports") or [] if "containerPort" in p]
                if ports:
                    _write(base + ".port", [str(ports[0])])
                print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
