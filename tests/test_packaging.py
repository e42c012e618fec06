"""The wheel, built and installed into a fresh venv: what a user gets from `pip install`.

An editable install maps whole directories, so a package missing from the wheel passes every
other test; this one imports every package from the installed wheel instead. The extension is
not built (WMK_BUILD_EXT=0): the packaging, not the compiler, is under test, and it keeps the
test to seconds.
"""

import ast
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import wmkernels
from wmkernels.cli import MODELS_EXTRA

ROOT = Path(__file__).resolve().parents[1]
# The installed package's roots in the repository (setup.py's PACKAGE_DIR).
ROOTS = {"wmkernels": "wmkernels", "wmkernels.models": "models", "wmkernels.bench": "bench"}
# Distributions whose import name differs from their name.
IMPORT_NAME = {"pillow": "PIL"}


def _source_packages():
    """Every directory holding an __init__.py under the three roots, as a dotted name."""
    names = set()
    for package, directory in ROOTS.items():
        for init in (ROOT / directory).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / directory).parts
            names.add(".".join((package, *parts)))
    return names


def _run(args, cwd, **env):
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    out = subprocess.run(args, cwd=cwd, env={**clean, **env}, capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 0, f"{args} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel, venv python): the wheel built from a copy of the sources, installed in a venv."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    # A copy, so the build's build/ and egg-info do not touch the working tree.
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "results")
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ROOTS.values():
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "--no-index", "-w", str(tmp / "dist"), str(src)], cwd=tmp, WMK_BUILD_EXT="0")
    (wheel,) = (tmp / "dist").glob("wmkernels-*.whl")

    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
          "--no-index", str(wheel)], cwd=tmp)
    # torch and the extras come from this environment; added after the install so that pip
    # never sees (or uninstalls) the editable wmkernels. A path line in a .pth file does not
    # run that directory's own .pth files, so the editable finder stays out.
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(_run([str(python), "-c", purelib], cwd=tmp).strip())
    (site / "environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return wheel, python


def test_wheel_holds_every_package_and_no_tests(installed):
    wheel, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    packages = {n.rsplit("/", 1)[0].replace("/", ".") for n in names if n.endswith("/__init__.py")}
    assert packages == _source_packages()
    assert not [n for n in names if Path(n).name.startswith(("test_", "bench_"))]


def test_installed_wheel_imports_and_runs_wmk_info(installed):
    wheel, python = installed
    venv = python.parents[1]
    code = ("import importlib, sys, wmkernels\n"
            f"assert wmkernels.__file__.startswith({str(venv)!r}), wmkernels.__file__\n"
            f"for name in {sorted(_source_packages())!r}:\n"
            "    importlib.import_module(name)\n"
            "from importlib.metadata import version\n"
            "print(version('wmkernels'), wmkernels.__version__)\n")
    # cwd outside the repository: `python -c` puts the cwd first on sys.path.
    a, b = _run([str(python), "-c", code], cwd=venv).split()
    assert a == b == wmkernels.__version__
    assert f"wmkernels {wmkernels.__version__}" in _run([str(venv / "bin" / "wmk"), "info"],
                                                      cwd=venv)


def test_installed_wheel_wmk_info_without_models_extra(installed):
    _, python = installed
    # Each extra's module set to None in sys.modules: importing it raises ModuleNotFoundError,
    # as on an install without the `models` extra.
    code = (f"import sys; sys.modules.update(dict.fromkeys({MODELS_EXTRA!r}))\n"
            "from wmkernels.cli import main\n"
            "sys.exit(main(['info']))\n")
    assert "wmkernels" in _run([str(python), "-c", code], cwd=python.parents[1])


def _third_party_imports(directory: Path) -> set[str]:
    """Top-level names of the absolute imports of every .py file under `directory`, less the
    standard library and wmkernels itself."""
    names = set()
    for path in directory.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"wmkernels"}


def _requirement_modules(requirements: list[str]) -> set[str]:
    names = {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in requirements}
    return {IMPORT_NAME.get(n, n.replace("-", "_")) for n in names}


def test_models_extra_is_what_the_pipelines_import():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = _requirement_modules(project["dependencies"])
    extra = _requirement_modules(project["optional-dependencies"]["models"])
    # every package the pipelines import is declared, and every declared one is imported
    assert _third_party_imports(ROOT / "models") - core == extra
    # the CLI names the same extra when a pipeline command cannot import
    assert set(MODELS_EXTRA) == extra
