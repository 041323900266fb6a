"""deploy/: the files a node runs kaext with -- the DaemonSets, their image's Containerfile,
the systemd units -- checked as files (parsed, not grepped where a parser exists) and, for
the unit, by systemd's own security analysis; the BPFProgram= drop-in by doing what systemd
does with it (attach the pinned program to another cgroup) and reading the policy back.

Booting them for real (a cluster, systemd as PID 1) is not done here.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from paths import ROOT

DEPLOY = ROOT / "deploy"
if not DEPLOY.is_dir():
    pytest.skip("not a source checkout", allow_module_level=True)
yaml = pytest.importorskip("yaml")

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
PLACEHOLDER = "@sha256:" + "0" * 64


def manifests(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text(encoding="utf-8")) if d]


def daemonset(name: str) -> dict[str, Any]:
    (ds,) = [d for d in manifests(name) if d["kind"] == "DaemonSet"]
    return ds


def container(name: str) -> dict[str, Any]:
    (c,) = daemonset(name)["spec"]["template"]["spec"]["containers"]
    return c


def commands(c: dict[str, Any]) -> list[str]:
    """Every command line the container runs: its command and args, probes, lifecycle hooks."""
    found = [*c.get("command", []), *c.get("args", [])]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "command":
                    found.extend(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for key in ("livenessProbe", "readinessProbe", "startupProbe", "lifecycle"):
        walk(c.get(key, {}))
    return [str(x) for x in found]


FILES = ["kaext-exporter-daemonset.yaml", "kaext-enforce-daemonset.yaml"]


@pytest.mark.parametrize("name", FILES)
def test_no_install_at_start_and_the_image_is_pinned_by_digest(name: str) -> None:
    c = container(name)
    lines = " ".join(commands(c))
    assert not re.search(r"\b(pip|pip3|apt|apt-get|apk|dnf|yum|curl|wget)\b|\binstall\b", lines), lines
    assert DIGEST.search(c["image"]), f"{name}: image not pinned by digest: {c['image']}"
    if c["image"].endswith(PLACEHOLDER):  # the documented placeholder: the docs say how to fill it
        text = (DEPLOY / name).read_text(encoding="utf-8")
        assert "REPLACE the digest: build, push, pin (docs/hardening.md)" in text
        hardening = (ROOT / "docs" / "hardening.md").read_text(encoding="utf-8")
        assert PLACEHOLDER.removeprefix("@") in hardening and "podman push --digestfile" in hardening
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert "privileged" not in c["securityContext"]
    assert c["livenessProbe"], name
    assert daemonset(name)["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_the_exporter_needs_no_host_network_and_only_prometheus_reaches_it() -> None:
    spec = daemonset("kaext-exporter-daemonset.yaml")["spec"]["template"]["spec"]
    assert spec["hostPID"] is True and not spec.get("hostNetwork", False)
    c = container("kaext-exporter-daemonset.yaml")
    caps = c["securityContext"]["capabilities"]
    assert caps["drop"] == ["ALL"] and set(caps["add"]) == {"SYS_PTRACE", "DAC_READ_SEARCH"}
    command = c["command"]
    assert command[command.index("--counters-of") + 1] == "1"  # the node's counters, not the pod's
    assert command[command.index("--listen") + 1] == ":9469"
    assert c["livenessProbe"]["httpGet"]["path"] == "/metrics" and c["livenessProbe"]["timeoutSeconds"] >= 5
    kinds = {d["kind"]: d for d in manifests("kaext-exporter-daemonset.yaml")}
    assert kinds["Service"]["spec"]["selector"] == {"app": "kaext-exporter"}
    policy = kinds["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"] == {"app": "kaext-exporter"}
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"} and policy["egress"] == []
    (rule,) = policy["ingress"]
    assert rule["from"] and rule["ports"] == [{"port": 9469, "protocol": "TCP"}]


def test_the_enforcer_has_only_what_bpf_needs_and_survives_pod_restarts() -> None:
    spec = daemonset("kaext-enforce-daemonset.yaml")["spec"]["template"]["spec"]
    assert not spec.get("hostPID", False) and not spec.get("hostNetwork", False)
    c = container("kaext-enforce-daemonset.yaml")
    caps = c["securityContext"]["capabilities"]
    assert caps["drop"] == ["ALL"] and set(caps["add"]) == {"BPF", "NET_ADMIN"}
    # detaching belongs to the documented removal, not to a pod's stop (rolling updates)
    assert "lifecycle" not in c
    script = "\n".join(c["args"])
    assert "--remove" in script.split('if [ "$KAEXT_ACTION" = remove ]; then', 1)[1].split("else")[0]
    text = (DEPLOY / "kaext-enforce-daemonset.yaml").read_text(encoding="utf-8")
    assert "KAEXT_ACTION=remove" in text and "Upgrade:" in text
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/sys/fs/bpf"]["mountPropagation"] == "HostToContainer"  # Bidirectional needs privileged


@pytest.mark.root
def test_the_enforcers_capabilities_are_enough_and_each_is_needed(tmp_path: Path) -> None:
    """kaext-enforce as root with exactly the DaemonSet's capabilities attaches, lists and
    removes; without either of them it cannot attach."""
    import kaext
    from kaext import enforce

    if kaext.IMPLEMENTATION != "c" or os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root, setpriv and the C extension")
    try:
        base = enforce.own_cgroup()
    except OSError as exc:
        pytest.skip(f"no cgroup v2 here: {exc}")
    caps = {c.lower() for c in container("kaext-enforce-daemonset.yaml")["securityContext"]["capabilities"]["add"]}
    path = os.path.join(base, f"kaext-deploy-{os.getpid()}-{os.urandom(4).hex()}")
    os.mkdir(path)

    def run(granted: set[str], *args: str) -> subprocess.CompletedProcess[str]:
        spec = ",".join(["-all", *(f"+{c}" for c in sorted(granted))])
        return subprocess.run(
            ["setpriv", f"--inh-caps={spec}", f"--bounding-set={spec}", "--", sys.executable, "-m", "kaext.enforce",
             *args],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    try:
        for missing in sorted(caps):
            refused = run(caps - {missing}, path, "--policy", "on")
            assert refused.returncode == 2, (missing, refused.stdout, refused.stderr)
        done = run(caps, path, "--policy", "on")
        if done.returncode != 0 and "BPF" in done.stderr and "Operation not permitted" not in done.stderr:
            pytest.skip(f"BPF not available here: {done.stderr.strip()}")
        assert done.returncode == 0, done.stderr
        listed = run(caps, "--list")
        assert path in listed.stdout, listed.stdout + listed.stderr
        assert run(caps, path, "--remove").returncode == 0
    finally:
        enforce.detach(path)
        os.rmdir(path)


# --- the image -------------------------------------------------------------------------------


def test_the_containerfile_builds_from_the_projects_wheel_on_a_pinned_base() -> None:
    text = (DEPLOY / "Containerfile").read_text(encoding="utf-8")
    instructions = [line for line in re.sub(r"\\\n", " ", text).splitlines() if line and not line.startswith("#")]
    froms = [line for line in instructions if line.startswith("FROM ")]
    assert froms == ["FROM ${BASE_IMAGE}"], froms
    assert "ARG BASE_IMAGE" in instructions  # no default: always named
    assert any("*@sha256:*) ;;" in line and "exit 1" in line for line in instructions)
    runs = " ".join(line for line in instructions if line.startswith("RUN "))
    for install in re.findall(r"pip install[^&]*", runs):  # only the copied wheel, or hash-pinned packages
        assert "--no-index" in install or "--require-hashes" in install, install
    assert any(line.startswith("COPY dist/") for line in instructions)
    requirements = (DEPLOY / "image-requirements.txt").read_text(encoding="utf-8")
    pins = re.findall(r"^([\w.-]+)==([\w.]+) \\\n\s+--hash=sha256:([0-9a-f]{64})$", requirements, re.MULTILINE)
    assert [name for name, _, _ in pins] == ["prometheus_client"], requirements


# --- systemd ------------------------------------------------------------------------------------


def unit_values(name: str, key: str) -> list[str]:
    text = (DEPLOY / name).read_text(encoding="utf-8")
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(f"{key}=")]


def test_the_exporter_unit_passes_systemd_analyze_security_at_3_or_less() -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    done = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(DEPLOY / "kaext-exporter.service")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = re.search(r"Overall exposure level for kaext-exporter\.service: (\d+\.\d+)", done.stdout + done.stderr)
    assert found, done.stdout + done.stderr
    assert float(found[1]) <= 3.0, done.stdout
    # ... without taking what reading other processes' sockets needs
    assert unit_values("kaext-exporter.service", "AmbientCapabilities") == ["CAP_SYS_PTRACE CAP_DAC_READ_SEARCH"]
    allowed = unit_values("kaext-exporter.service", "SystemCallFilter")
    assert any("pidfd_getfd" in v.split() and not v.startswith("~") for v in allowed), allowed
    assert "AF_NETLINK" in unit_values("kaext-exporter.service", "RestrictAddressFamilies")[0]
    assert not unit_values("kaext-exporter.service", "PrivateUsers")  # would void the capabilities
    assert unit_values("kaext-exporter.service", "ProtectProc") in ([], ["default"])  # invisible hides them


def test_the_bpfprogram_drop_in_names_the_pin_kaext_makes() -> None:
    from kaext import enforce

    (program,) = unit_values("kaext-bpf-policy.conf", "BPFProgram")
    kind, _, pin = program.partition(":")
    assert kind == "sock_ops"
    starts = unit_values("kaext-bpf-policy.service", "ExecStart")
    (enforcing,) = [s for s in starts if "kaext-enforce" in s]
    template = enforcing.split()[1]
    # the pins are named by the cgroup's id (enforce._pin_name), new with each boot: the service
    # links a stable name to them, which the drop-in names
    (linking,) = [s for s in starts if "ln -sfn" in s]
    assert f'"kaext/{enforce._PIN_PREFIX}$(stat -c %%i {template})"' in linking, linking
    link = linking.rstrip("'").split()[-1]
    assert os.path.dirname(link) == enforce._platform.BPF_FS
    assert pin == os.path.join(link, "sock_ops")
    assert enforce._pin_root() == os.path.join(enforce._platform.BPF_FS, "kaext")
    assert unit_values("kaext-bpf-policy.conf", "Requires") == ["kaext-bpf-policy.service"]


@pytest.mark.root
def test_the_pinned_program_attached_as_systemd_does_gives_the_policy() -> None:
    """What BPFProgram= does: BPF_OBJ_GET of the pin, BPF_PROG_ATTACH (ALLOW_MULTI) to the
    unit's cgroup; a process started there has the policy on its first connection."""
    import kaext
    from kaext import _backend, enforce

    if kaext.IMPLEMENTATION != "c" or os.geteuid() != 0:
        pytest.skip("needs root and the C extension")
    try:
        base = enforce.own_cgroup()
    except OSError as exc:
        pytest.skip(f"no cgroup v2 here: {exc}")
    tag = f"{os.getpid()}-{os.urandom(4).hex()}"
    template, unit = (os.path.join(base, f"kaext-{role}-{tag}") for role in ("template", "unit"))
    os.mkdir(template)
    os.mkdir(unit)
    prog = unit_fd = -1
    try:
        try:
            enforce.attach(template, "175s:35s:5 user_timeout=19m")
        except OSError as exc:
            pytest.skip(f"BPF not available here: {exc}")
        # the service's stable link, made by its own command line (for this cgroup, under a name
        # of this test's), read as systemd reads BPFProgram=
        (linking,) = [s for s in unit_values("kaext-bpf-policy.service", "ExecStart") if "ln -sfn" in s]
        link = os.path.join(enforce._platform.BPF_FS, f"kaext-test-{tag}")
        command = linking.replace("%%", "%").replace("/sys/fs/cgroup/kaext-policy", template)
        command = command.replace("/sys/fs/bpf/kaext-policy", link)
        subprocess.run(shlex.split(command), check=True, timeout=30)
        try:
            assert os.readlink(link) == f"kaext/{enforce._pin_name(os.stat(template).st_ino)}"
            prog = _backend.bpf_obj_get(os.path.join(link, "sock_ops"))
        finally:
            os.unlink(link)
        unit_fd = os.open(unit, os.O_RDONLY | os.O_DIRECTORY)
        _backend.bpf_attach(unit_fd, prog, _backend.BPF_SOCK_OPS)

        def enter() -> None:
            with open(os.path.join(unit, "cgroup.procs"), "w") as f:
                f.write("0")

        with socket.create_server(("127.0.0.1", 0)) as listener:
            read = subprocess.run(
                [sys.executable, "-c", READ_BACK, str(listener.getsockname()[1])],
                preexec_fn=enter,
                capture_output=True,
                text=True,
                timeout=60,
            )
        assert read.returncode == 0, read.stderr
        assert read.stdout.split() == ["1", "175", "35", "5", str(19 * 60 * 1000)]
    finally:
        if prog >= 0 and unit_fd >= 0:
            _backend.bpf_detach(unit_fd, prog, _backend.BPF_SOCK_OPS)
        for fd in (prog, unit_fd):
            if fd >= 0:
                os.close(fd)
        enforce.detach(template)
        os.rmdir(template)
        os.rmdir(unit)


# The first connection of a process: its options as the kernel holds them.
READ_BACK = r"""
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
print(s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
      *(s.getsockopt(socket.IPPROTO_TCP, o) for o in
        (socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT, socket.TCP_USER_TIMEOUT)))
"""
