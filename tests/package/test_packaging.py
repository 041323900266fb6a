"""Packaging: the wheel workflow, the cibuildwheel matrix, the sdist and wheels, the type stubs.

Tests that need the source checkout (``wheels.yml``, ``setup.py``) or
cibuildwheel skip where those are missing, e.g. when the suite runs against an
installed wheel.  ``KAEXT_REQUIRE_PACKAGING=1`` (set by the CI packaging step)
turns every such skip into a failure.  The CI step also passes the artefacts it
built: ``KAEXT_SDIST``, ``KAEXT_WHEEL`` (with the extension) and
``KAEXT_PURE_WHEEL`` (``KAEXT_NO_EXTENSIONS=1``).
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
from paths import ROOT

import kaext
from kaext import _backend, _pure

try:
    from kaext import _kaext
except ImportError:  # pure-Python install
    _kaext = None  # type: ignore[assignment]

pytestmark = pytest.mark.one_implementation

REQUIRE = os.environ.get("KAEXT_REQUIRE_PACKAGING") == "1"

#: The CPython builds every platform/arch gets: 3.10-3.15 and free-threaded 3.14t/3.15t.
PYTHONS = ("cp310", "cp311", "cp312", "cp313", "cp314", "cp314t", "cp315", "cp315t")
#: Platform tag suffix of the cibuildwheel identifier, per platform and arch.
PLATFORM_TAGS = {
    "linux": {
        "x86_64": ("manylinux_x86_64", "musllinux_x86_64"),
        "aarch64": ("manylinux_aarch64", "musllinux_aarch64"),
    },
    "macos": {"x86_64": ("macosx_x86_64",), "arm64": ("macosx_arm64",)},
    "windows": {"AMD64": ("win_amd64",), "x86": ("win32",), "ARM64": ("win_arm64",)},
}


def _missing(what: str) -> None:
    if REQUIRE:
        pytest.fail(f"{what}, but KAEXT_REQUIRE_PACKAGING=1")
    pytest.skip(what)


def _source(name: str) -> Path:
    path = ROOT / name
    if not path.is_file():
        _missing(f"{name} not found: not running from a source checkout")
    return path


def _pyproject() -> dict[str, Any]:
    path = _source("pyproject.toml")
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            _missing("reading pyproject.toml needs Python 3.11+ (tomllib) or tomli")
    with path.open("rb") as f:
        return tomllib.load(f)


def _artefact(variable: str) -> Path:
    value = os.environ.get(variable)
    if not value:
        _missing(f"${variable} not set (the CI packaging step sets it to the file it built)")
    return Path(value)  # type: ignore[arg-type]


# --- the workflow -------------------------------------------------------------------------


def test_workflow_copy_is_byte_identical() -> None:
    source = _source("wheels.yml").read_bytes()
    copy = _source(".github/workflows/wheels.yml").read_bytes()
    assert copy == source, (
        ".github/workflows/wheels.yml differs from wheels.yml (the source of truth): "
        "cp wheels.yml .github/workflows/wheels.yml"
    )


def _workflow() -> str:
    return _source("wheels.yml").read_text(encoding="utf-8")


#: ``- uses: owner/repo@<commit> # vX.Y.Z``: an action pinned by its full commit hash, the
#: release it is named in the comment (a tag can be moved, a commit cannot).
_PINNED_USES = re.compile(r"uses:\s*([\w.-]+/[\w./-]+)@([0-9a-f]{40}) # (v\d+\.\d+\.\d+)$")


def test_workflow_pins_every_action_by_commit() -> None:
    uses = [line.strip() for line in _workflow().splitlines() if re.match(r"\s*(-\s*)?uses:", line)]
    assert uses, "no `uses:` lines in wheels.yml"
    unpinned = [line for line in uses if not _PINNED_USES.search(line)]
    assert not unpinned, f"pin these by full commit hash with a `# vX.Y.Z` comment: {unpinned}"
    # one release per action: two commits for one action would be two versions of it
    releases: dict[str, set[tuple[str, str]]] = {}
    for line in uses:
        match = _PINNED_USES.search(line)
        assert match is not None
        releases.setdefault(match[1], set()).add((match[2], match[3]))
    assert all(len(pins) == 1 for pins in releases.values()), releases


def test_workflow_pins_cibuildwheel_4() -> None:
    pins = re.findall(r"uses:\s*pypa/cibuildwheel@[0-9a-f]{40} # (\S+)$", _workflow(), flags=re.MULTILINE)
    assert len(pins) == 1, pins
    assert re.fullmatch(r"v4\.\d+\.\d+", pins[0]), f"cibuildwheel must be pinned to a 4.x release: {pins[0]}"
    # .ci/steps/20-wheels.sh reads the version with this sed expression: it must find it
    sed = shutil.which("sed")
    if sed is None:
        _missing("sed is not installed here")
    step = _source(".ci/steps/20-wheels.sh").read_text(encoding="utf-8")
    expression = re.search(r"CIBW_VERSION=\$\(sed -n '([^']+)' wheels.yml\)", step)
    assert expression is not None, "20-wheels.sh no longer reads the cibuildwheel version with sed"
    read = subprocess.run([sed, "-n", expression[1], str(_source("wheels.yml"))], capture_output=True, text=True)
    assert f"v{read.stdout.strip()}" == pins[0], (read.stdout, read.stderr)
    try:
        installed = importlib.metadata.version("cibuildwheel")
    except importlib.metadata.PackageNotFoundError:
        _missing("cibuildwheel is not installed here; cannot compare its version with the pin")
    assert f"v{installed}" == pins[0], (
        f"cibuildwheel {installed} is installed but wheels.yml pins {pins[0]}: "
        "the identifiers checked here would not be the ones the workflow builds"
    )


def test_zizmor_finds_nothing_high() -> None:
    zizmor = shutil.which("zizmor")
    if zizmor is None:
        _missing("zizmor is not installed here (pip install zizmor)")
    audit = subprocess.run(
        [zizmor, "--offline", "--format", "plain", "--min-severity", "high", str(_source("wheels.yml"))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr


def _matrix_runners() -> list[tuple[str, list[str]]]:
    """The (runner, archs) pairs of the wheels job's matrix."""
    return [
        (runner, archs.split())
        for runner, archs in re.findall(r"-\s*\{\s*os:\s*([\w.-]+),\s*archs:\s*([\w ]+?)\s*\}", _workflow())
    ]


def test_each_arch_builds_on_one_native_runner() -> None:
    config = _pyproject()["tool"]["cibuildwheel"]
    runners = _matrix_runners()
    assert runners, "no `- { os: ..., archs: ... }` entries in the wheels matrix"
    families = {"ubuntu": "linux", "macos": "macos", "windows": "windows"}
    seen: dict[str, list[str]] = {"linux": [], "macos": [], "windows": []}
    for runner, archs in runners:
        platform = families[runner.split("-")[0]]
        seen[platform] += archs
        apple_silicon = platform == "macos" and not runner.endswith("-intel") and runner != "macos-13"
        arm = runner.endswith("-arm") or apple_silicon
        for arch in archs:
            is_arm_arch = arch in ("aarch64", "arm64", "ARM64")
            assert is_arm_arch == arm, f"{arch} would be cross-built (and not tested) on {runner}"
    for platform, archs in seen.items():
        assert sorted(archs) == sorted(config[platform]["archs"]), (
            f"{platform}: runners build {archs}, pyproject.toml lists {config[platform]['archs']}"
        )
        assert len(set(archs)) == len(archs), f"{platform}: an arch is built on two runners: {archs}"


def test_workflow_builds_sdist_and_pure_wheel_and_publishes_on_tags() -> None:
    text = _workflow()
    assert "python -m build --sdist" in text
    assert re.search(r'KAEXT_NO_EXTENSIONS:\s*"1"', text)
    assert "py3-none-any.whl" in text
    publish = text[text.index("\n  publish:") :]
    assert "startsWith(github.ref, 'refs/tags/v')" in publish
    assert re.search(r"permissions:\s*\n\s*id-token:\s*write", publish)
    assert re.search(r"environment:\s*\n\s*name:\s*pypi\b", publish)
    assert re.search(r"uses: pypa/gh-action-pypi-publish@[0-9a-f]{40} # v1\.\d+\.\d+$", publish, re.MULTILINE)
    assert "password" not in publish and "secrets." not in publish, "trusted publishing needs no token"
    # Settings belong in pyproject.toml; the workflow only picks each runner's arch.
    assert set(re.findall(r"\bCIBW_[A-Z_]+", text)) == {"CIBW_ARCHS"}


# --- cibuildwheel's view of pyproject.toml ------------------------------------------------


def _expected_identifiers(platform: str) -> list[str]:
    return sorted(f"{python}-{tag}" for tags in PLATFORM_TAGS[platform].values() for tag in tags for python in PYTHONS)


@pytest.mark.parametrize("platform", sorted(PLATFORM_TAGS))
def test_cibuildwheel_builds_exactly_the_matrix(platform: str) -> None:
    _source("setup.py")
    _source("pyproject.toml")
    if importlib.util.find_spec("cibuildwheel") is None:
        _missing("cibuildwheel is not installed (pip install cibuildwheel)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIBW_")}
    result = subprocess.run(
        [sys.executable, "-m", "cibuildwheel", "--print-build-identifiers", "--platform", platform, str(ROOT)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    identifiers = result.stdout.split()
    assert len(identifiers) == len(set(identifiers)), identifiers
    assert sorted(identifiers) == _expected_identifiers(platform)


def test_free_threaded_wheels_also_run_the_thread_tests_in_parallel() -> None:
    from fnmatch import fnmatch

    overrides = _pyproject()["tool"]["cibuildwheel"].get("overrides", [])
    for identifier in ("cp314t-manylinux_x86_64", "cp315t-win_arm64", "cp314t-macosx_arm64"):
        matching = [o for o in overrides if fnmatch(identifier, o["select"])]
        assert any(
            "pytest-run-parallel" in o.get("test-requires", []) and "--parallel-threads" in o.get("test-command", "")
            for o in matching
        ), identifier
    for identifier in ("cp314-manylinux_x86_64", "cp313-win_amd64"):  # GIL builds: no such override
        assert not [o for o in overrides if fnmatch(identifier, o["select"])], identifier


def test_build_system_needs_setuptools_and_cython() -> None:
    from packaging.requirements import Requirement

    build_system = _pyproject()["build-system"]
    assert build_system["build-backend"] == "setuptools.build_meta"
    requires = {Requirement(r).name.lower(): Requirement(r).specifier for r in build_system["requires"]}
    assert set(requires) == {"setuptools", "cython"}
    # The SPDX `license = "MIT"` field needs setuptools 77 or newer.
    assert not requires["setuptools"].contains("76.1") and requires["setuptools"].contains("77.0")
    assert not requires["cython"].contains("0.29.37") and requires["cython"].contains("3.1.0")


# --- type information shipped with the package --------------------------------------------


def _package_file(name: str) -> Path:
    return Path(kaext.__file__).parent / name


def test_package_ships_py_typed_and_the_extension_stub() -> None:
    assert _package_file("py.typed").is_file()
    assert _package_file("_kaext.pyi").is_file()


def _stub() -> ast.Module:
    return ast.parse(_package_file("_kaext.pyi").read_text(encoding="utf-8"))


def _conforms(value: object, annotation: ast.expr) -> bool:
    """Does ``value`` match the (simple) annotation used in the stub?"""
    if isinstance(annotation, ast.Constant) and annotation.value is None:
        return value is None
    if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
        return _conforms(value, annotation.left) or _conforms(value, annotation.right)
    if isinstance(annotation, ast.Name):
        kinds = {"int": int, "str": str, "bool": bool}
        return isinstance(value, kinds[annotation.id]) and (annotation.id == "bool" or not isinstance(value, bool))
    assert isinstance(annotation, ast.Subscript), ast.unparse(annotation)
    origin = ast.unparse(annotation.value)
    args = annotation.slice.elts if isinstance(annotation.slice, ast.Tuple) else [annotation.slice]
    if origin == "Literal":
        return any(
            isinstance(arg, ast.Constant) and type(value) is type(arg.value) and value == arg.value for arg in args
        )
    if origin == "dict":
        return isinstance(value, dict) and all(
            _conforms(k, args[0]) and _conforms(v, args[1]) for k, v in value.items()
        )
    assert origin == "tuple", origin
    if not isinstance(value, tuple):
        return False
    if len(args) == 2 and isinstance(args[1], ast.Constant) and args[1].value is Ellipsis:
        return all(_conforms(item, args[0]) for item in value)
    return len(value) == len(args) and all(_conforms(item, arg) for item, arg in zip(value, args, strict=True))


def test_stub_declares_exactly_the_backend_interface() -> None:
    names = {
        node.target.id if isinstance(node, ast.AnnAssign) else node.name  # type: ignore[union-attr]
        for node in _stub().body
        if isinstance(node, (ast.AnnAssign, ast.FunctionDef, ast.ClassDef))
    }
    assert names == set(_backend.__all__)


def test_stub_functions_match_the_pure_implementation() -> None:
    functions = [node for node in _stub().body if isinstance(node, ast.FunctionDef)]
    assert functions
    for node in functions:
        pure = inspect.signature(getattr(_pure, node.name))
        stub_params = [(a.arg, ast.unparse(a.annotation)) for a in node.args.args]  # type: ignore[arg-type]
        pure_params = [(p.name, p.annotation) for p in pure.parameters.values()]
        assert stub_params == pure_params, node.name
        assert ast.unparse(node.returns) == pure.return_annotation, node.name  # type: ignore[arg-type]
        if _kaext is not None:
            compiled = inspect.signature(getattr(_kaext, node.name))
            assert [p.name for p in compiled.parameters.values()] == [a.arg for a in node.args.args], node.name


@pytest.mark.parametrize("module", [_pure, _kaext], ids=["python", "c"])
def test_stub_variable_types_hold_at_run_time(module: Any) -> None:
    if module is None:
        pytest.skip("the C extension kaext._kaext is not built here")
    variables = [node for node in _stub().body if isinstance(node, ast.AnnAssign)]
    assert variables
    for node in variables:
        name = node.target.id  # type: ignore[union-attr]
        value = getattr(module, name)
        expected = ast.unparse(node.annotation)
        assert _conforms(value, node.annotation), f"{module.__name__}.{name} = {value!r} is not {expected}"
        pure_annotation = _pure.__annotations__.get(name)
        if pure_annotation is not None:
            assert pure_annotation == ast.unparse(node.annotation), name


# --- the artefacts the CI packaging step built --------------------------------------------


def _tracked(pattern: str) -> set[str]:
    return {
        str(p.relative_to(ROOT))
        for p in ROOT.glob(pattern)
        if p.is_file() and not any(part == "__pycache__" or part.startswith(".") for part in p.relative_to(ROOT).parts)
    }


def test_sdist_contents() -> None:
    sdist = _artefact("KAEXT_SDIST")
    _source("setup.py")
    with tarfile.open(sdist) as tar:
        top, *_ = tar.getnames()[0].split("/")
        members = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    needed = (
        {"README.md", "LICENSE", "pyproject.toml", "setup.py", "MANIFEST.in"}
        | {"src/kaext/py.typed", "src/kaext/_kaext.pyi"}
        | _tracked("ext/*.pyx")
        | _tracked("ext/*.pxi")
        | _tracked("ext/*.h")
        | _tracked("src/kaext/*.py")
        | _tracked("tests/**/*")
        | _tracked("deploy/*")  # the suite checks the capabilities they grant
    )
    assert {"ext/_kaext.pyx", "ext/_kaext_proc.pxi", "tests/conftest.py"} <= needed
    assert {"ext/kaext_shim.h", "ext/kaext_posix.h", "ext/kaext_windows.h"} <= needed
    assert not needed - members, f"missing from {sdist.name}: {sorted(needed - members)}"
    stray = {m for m in members if m.endswith((".so", ".pyd", ".pyc")) or m == "ext/_kaext.c"}
    assert not stray, stray
    assert top == sdist.name.removesuffix(".tar.gz")


def _wheel_members(wheel: Path) -> tuple[set[str], str]:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        info = next(n for n in names if n.endswith(".dist-info/WHEEL"))
        return names, zf.read(info).decode()


def _python_modules() -> set[str]:
    _source("setup.py")
    return {"kaext/" + Path(p).name for p in _tracked("src/kaext/*.py")}


def test_wheel_with_extension_is_platform_tagged() -> None:
    wheel = _artefact("KAEXT_WHEEL")
    names, metadata = _wheel_members(wheel)
    tag = wheel.name.removesuffix(".whl").split("-", 2)[2]
    python, abi, platform = tag.split("-")
    assert python.startswith("cp3") and abi.startswith("cp3") and platform not in ("any", "linux_x86_64"), tag
    assert "Root-Is-Purelib: false" in metadata
    assert [n for n in names if re.fullmatch(r"kaext/_kaext\.[^/]+\.(so|pyd)", n)], sorted(names)
    assert {"kaext/py.typed", "kaext/_kaext.pyi"} | _python_modules() <= names


def test_pure_wheel_is_py3_none_any() -> None:
    wheel = _artefact("KAEXT_PURE_WHEEL")
    names, metadata = _wheel_members(wheel)
    assert wheel.name.endswith("-py3-none-any.whl"), wheel.name
    assert "Root-Is-Purelib: true" in metadata
    assert not [n for n in names if n.endswith((".so", ".pyd", ".c"))], sorted(names)
    assert {"kaext/py.typed", "kaext/_kaext.pyi"} | _python_modules() <= names


# --- release builds without debug information; debug builds on request -------------------


def _elf_sections(path: Path) -> set[str]:
    """Section names of an ELF file, as binutils' readelf lists them."""
    import shutil

    readelf = shutil.which("readelf")
    if readelf is None:
        _missing("readelf (binutils) not found")
    out = subprocess.run([readelf, "-W", "--section-headers", str(path)], capture_output=True, text=True, check=True)
    return set(re.findall(r"\]\s+(\.\S+)", out.stdout))


def _libraries_from(wheel: Path, into: Path) -> list[Path]:
    """The wheel's shared libraries (the extension, the preload library), extracted."""
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.startswith("kaext/") and n.endswith(".so")]
        assert any(re.fullmatch(r"kaext/_kaext\.[^/]+\.so", n) for n in names), names
        return [Path(zf.extract(name, into)) for name in names]


def test_release_wheel_has_no_debug_information(tmp_path: Path) -> None:
    wheel = _artefact("KAEXT_WHEEL")
    if "linux" not in wheel.name.rsplit("-", 1)[-1]:
        pytest.skip(f"{wheel.name} is not a Linux (ELF) wheel")
    for library in _libraries_from(wheel, tmp_path):
        sections = _elf_sections(library)
        assert ".text" in sections, (library.name, sorted(sections))  # readelf did read it
        assert not {s for s in sections if s.startswith(".debug")}, (library.name, sorted(sections))
        assert ".symtab" not in sections, (library.name, sorted(sections))  # stripped


def test_debug_build_keeps_debug_information(tmp_path: Path) -> None:
    """``KAEXT_DEBUG=1`` builds the extension with DWARF debug information, not stripped."""
    if not REQUIRE:
        pytest.skip("builds a wheel: runs in the packaging step (KAEXT_REQUIRE_PACKAGING=1)")
    setup = _source("setup.py")
    if not sys.platform.startswith("linux"):  # readelf; the flags are the same with every gcc/clang
        pytest.skip("reads ELF sections: Linux only")
    env = dict(os.environ, KAEXT_DEBUG="1", KAEXT_REQUIRE_EXTENSION="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("KAEXT_NO_EXTENSIONS", None)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(setup.parent)],
        env=env,
        check=True,
        capture_output=True,
    )
    [wheel] = (tmp_path / "dist").glob("kaext-*.whl")
    for library in _libraries_from(wheel, tmp_path):
        sections = _elf_sections(library)
        assert {".debug_info", ".debug_line", ".symtab"} <= sections, (library.name, sorted(sections))


def test_cibuildwheel_builds_release_wheels() -> None:
    """cibuildwheel builds through setup.py: nothing in its settings asks for a debug build."""
    config = _pyproject()["tool"]["cibuildwheel"]
    sections = [config, *(config.get(p, {}) for p in ("linux", "macos", "windows")), *config.get("overrides", [])]
    for section in sections:
        environment = section.get("environment", {})
        assert isinstance(environment, dict), environment
        assert environment.get("KAEXT_DEBUG", "0") in ("", "0"), section
        for flags in ("CFLAGS", "LDFLAGS", "CPPFLAGS"):
            assert not re.search(r"(^|\s)-(g|O0)\b", environment.get(flags, "")), section


# --- no compiler: the sdist installs the pure-Python implementation and says so ---------------


def _no_compiler_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KAEXT_REQUIRE_EXTENSION", "KAEXT_NO_EXTENSIONS")}
    # `false` as the C compiler: every compile fails, as on a machine without one
    env.update(CC="false", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    env.pop("PYTHONPATH", None)
    return env


def test_sdist_without_a_compiler(tmp_path: Path) -> None:
    """``CC=false pip install kaext.tar.gz`` installs the pure-Python implementation and says so
    (pip shows a build's output with -v); with KAEXT_REQUIRE_EXTENSION=1 the build fails."""
    sdist = _artefact("KAEXT_SDIST")
    import venv

    venv.create(tmp_path / "venv", with_pip=True)
    python = str(tmp_path / "venv" / ("Scripts" if os.name == "nt" else "bin") / "python")
    env = _no_compiler_env()
    install = subprocess.run(
        [python, "-m", "pip", "install", "-v", "--no-deps", str(sdist)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    said = install.stdout + install.stderr
    assert "the C extension could not be built" in said and "pure-Python implementation was installed" in said
    implementation = subprocess.run(
        [python, "-c", "import kaext; print(kaext.IMPLEMENTATION)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=tmp_path,
    ).stdout.strip()
    assert implementation == "python"

    env["KAEXT_REQUIRE_EXTENSION"] = "1"
    strict = subprocess.run(
        [python, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-w", str(tmp_path / "wheels"), str(sdist)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert strict.returncode != 0
    assert not list(tmp_path.glob("wheels/*.whl"))
    assert "false" in strict.stdout + strict.stderr  # the compiler command that failed is shown


@pytest.mark.parametrize("stale_mtime", ["older", "newer"])
def test_failed_compile_does_not_ship_an_older_build(tmp_path: Path, stale_mtime: str) -> None:
    """A tree built before (``build/lib.*/kaext/_kaext*.so`` left behind), then changed and
    rebuilt without a working compiler: the wheel must hold the pure-Python implementation
    the build says it installed, not the extension of the older sources, nor a preload
    library setuptools takes for up to date (newer than its sources); and it is a pure
    wheel (``py3-none-any``)."""
    if not (ROOT / "setup.py").is_file() or not (ROOT / "ext" / "_kaext.pyx").is_file():
        _missing("not running from a source checkout")
    tree = tmp_path / "tree"
    shutil.copytree(
        ROOT,
        tree,
        ignore=shutil.ignore_patterns(
            ".git",
            "build",
            "dist",
            ".venv*",
            "__pycache__",
            "*.so",
            "*.pyd",
            "*.egg-info",
            ".*cache",
            ".hypothesis",
        ),
    )
    built = tree / "build" / f"lib.{sysconfig.get_platform()}-{sys.implementation.cache_tag}" / "kaext"
    built.mkdir(parents=True)
    stale = built / f"_kaext{sysconfig.get_config_var('EXT_SUFFIX')}"
    stale.write_bytes(b"an extension built from older sources")
    os.utime(stale, (0, 0))  # older than every source: setuptools rebuilds it
    stale_preload = built / "libkaext_preload.so"  # Linux: the library kaext.run preloads
    stale_preload.write_bytes(b"a preload library built from older sources")
    if stale_mtime == "older":
        os.utime(stale_preload, (0, 0))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-v",
            "--no-deps",
            "--no-cache-dir",
            "-w",
            str(tmp_path / "wheels"),
            str(tree),
        ],
        env=_no_compiler_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    said = done.stdout + done.stderr
    if done.returncode != 0 and "could not be built" not in said:  # no build backend reachable
        _missing(f"pip could not set up the build: {said[-500:]}")
    assert done.returncode == 0, said[-3000:]
    assert "pure-Python implementation was installed" in said
    (wheel,) = tmp_path.glob("wheels/kaext-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        binaries = [
            n
            for n in archive.namelist()
            if n.startswith(("kaext/_kaext", "kaext/libkaext_preload")) and not n.endswith(".pyi")
        ]
        wheel_file = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/WHEEL"))).decode()
    assert binaries == []
    assert wheel.name.endswith("-py3-none-any.whl"), wheel.name
    assert "Root-Is-Purelib: true" in wheel_file and "Tag: py3-none-any" in wheel_file, wheel_file
