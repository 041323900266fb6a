"""The per-OS kernel model (tests/support/kernel_model) and kaext's idea of each platform.

``sys.platform`` strings and the kernel behind them: CPython's documentation of
``sys.platform`` ("android" from 3.13, gh-71052 / PEP 738; "ios" from 3.13, PEP 730;
"tvos", "watchos", "visionos" from 3.14; "wasi", "emscripten"; "cygwin").  Android runs
a Linux kernel, the Apple platforms xnu.  The suite against every model runs in
fresh interpreters (.ci/steps/09-kernel-model.sh; here too: about a second).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import families
import kernel_model
import pytest

from kaext import _platform

pytestmark = pytest.mark.one_implementation

RUN_ALL = Path(kernel_model.__file__).parent / "run_all.py"

KERNEL_OF = families.platforms()


@pytest.mark.parametrize("platform", KERNEL_OF)
def test_each_platform_string_is_its_kernels_family(platform: str) -> None:
    assert _platform._family(platform) == KERNEL_OF[platform]


def test_cygwin_lists_no_connections_and_says_why() -> None:
    """Cygwin: no /proc/<pid>/net/tcp, no /proc/<pid>/ns, no netlink -> no listing (ENOSYS), never []."""
    assert _platform.connections_mode("cygwin", _platform._family("cygwin")) == ""
    assert _platform.connections_mode("linux", "linux") == "proc"
    assert _platform.connections_mode("android", "linux") == "proc"
    assert "Cygwin" in _platform.PLATFORM_NO_CONNECTIONS["cygwin"]


@pytest.mark.parametrize("name", sorted(kernel_model.MODELS))
def test_the_model_names_its_kernels_family(name: str) -> None:
    model = kernel_model.MODELS[name]()
    assert _platform._family(model.platform) == model.family
    # every knob kaext's table offers there is an option the model's kernel knows, with a header number
    for knob, spec in _platform.specs(model.family, platform=model.platform).items():
        if model.windows_sio and knob in ("idle", "interval"):  # the ioctl instead (ALTERNATIVES)
            assert _platform.ALTERNATIVES["windows"][knob][0].ioctl
            continue
        if model.fixed_count is not None and knob == "count":  # the kernel's own, fixed (UNSUPPORTED says so)
            assert model.fixed_count == _platform.FIXED_PROBE_COUNT[model.family]
            assert str(model.fixed_count) in _platform.UNSUPPORTED[model.family]["count"]
            continue
        assert spec.option in model.check, (name, knob, spec.option)
        assert spec.option in model.numbers(), (name, knob, spec.option)


def test_public_api_suite_against_every_model() -> None:
    done = subprocess.run([sys.executable, str(RUN_ALL)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
