"""The package's layers, as import-linter (``lint-imports``, configured in pyproject.toml) sees them.

CI's lint step runs ``lint-imports`` too; this runs it with the suite wherever it is
installed, so a layer broken by how a module is imported shows up with the tests.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from paths import ROOT


@pytest.mark.one_implementation
def test_lint_imports_keeps_the_layers() -> None:
    tool = shutil.which("lint-imports")
    if tool is None or not (ROOT / "pyproject.toml").is_file():
        pytest.skip("import-linter is not installed here (CI's lint step installs and runs it)")
    done = subprocess.run([tool], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]
    assert "BROKEN" not in done.stdout


@pytest.mark.one_implementation
def test_the_chooser_hands_out_the_extension_module_when_built() -> None:
    import kaext
    from kaext import _backend

    try:
        from kaext import _kaext
    except ImportError:
        pytest.skip("the C extension is not built here")
    if kaext.IMPLEMENTATION != "c":
        pytest.skip("KAEXT_NO_EXTENSIONS=1: the pure-Python backend was chosen")
    assert _backend.apply_policy is _kaext.apply_policy
    assert _backend.read is _kaext.read
