#!/usr/bin/python3
"""The guest kernel's module loader under tools/uml.sh (its ``/proc/sys/kernel/modprobe``).

The guest's root is the host's filesystem, which has no ``/lib/modules/6.1.x`` (nor, often,
kmod): Debian's user-mode-linux ships its modules in ``/usr/lib/uml/modules/<release>``.  The
kernel asks for a module by name or alias (``modprobe -q -- rtnl-link-veth`` for ``ip link add
... type veth``, ``net-pf-10`` for IPv6); this resolves it with that directory's
``modules.alias`` and ``modules.dep`` and loads it and what it depends on (finit_module).

    uml_modprobe.py [-q] [--] NAME [NAME ...]
"""

from __future__ import annotations

import ctypes
import errno
import fnmatch
import os
import sys

ROOT = f"/usr/lib/uml/modules/{os.uname().release}"
SYS_FINIT_MODULE = 313  # x86_64 (arch/x86/entry/syscalls/syscall_64.tbl), the only UML arch Debian ships


def _name(path: str) -> str:
    return os.path.basename(path).split(".ko")[0].replace("-", "_")


def _deps() -> dict[str, tuple[str, list[str]]]:
    """{module name: (its path, the paths it depends on)} from modules.dep."""
    table = {}
    with open(f"{ROOT}/modules.dep", encoding="utf-8") as f:
        for line in f:
            path, _, rest = line.partition(":")
            table[_name(path)] = (path, rest.split())
    return table


def _resolve(wanted: str, deps: dict[str, tuple[str, list[str]]]) -> list[str]:
    """The module names ``wanted`` (a name or an alias) stands for."""
    if wanted.replace("-", "_") in deps:
        return [wanted.replace("-", "_")]
    found = []
    with open(f"{ROOT}/modules.alias", encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[0] == "alias" and fnmatch.fnmatchcase(wanted, parts[1]):
                found.append(parts[2].replace("-", "_"))
    return found


def _load(path: str) -> None:
    if os.path.exists(f"/sys/module/{_name(path)}"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"{ROOT}/{path}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.syscall(SYS_FINIT_MODULE, fd, b"", 0) != 0:
            err = ctypes.get_errno()
            if err != errno.EEXIST:
                raise OSError(err, f"finit_module {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    quiet = "-q" in argv
    names = [a for a in argv if not a.startswith("-")]
    deps = _deps()
    status = 0
    for wanted in names:
        modules = _resolve(wanted, deps)
        if not modules:
            if not quiet:
                print(f"uml_modprobe: no module for {wanted!r}", file=sys.stderr)
            status = 1
            continue
        for module in modules:
            path, needs = deps[module]
            try:
                for dep in reversed(needs):  # modules.dep lists the deepest last
                    _load(dep)
                _load(path)
            except OSError as exc:
                if not quiet:
                    print(f"uml_modprobe: {exc}", file=sys.stderr)
                status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
