"""A wmkernels without its C++ extension (a pure-Python build, e.g. pip's build isolation) or
with one built against another torch: `import wmkernels` warns once with the rebuild
command, and `backends()` gives that reason, not Python's generic import error."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import wmkernels

PROBE = """
import warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import wmkernels
    import wmkernels.ops.vq
print("WARNINGS", sum("wmkernels:" in str(w.message) for w in caught))
for w in caught:
    print("MESSAGE", w.message)
print("FILE", wmkernels.__file__)
print("REASON", wmkernels.backends()["vq_lookup"]["cpu"]["cpu"])
"""


def _copy_without_extension(tmp_path: Path) -> Path:
    src = Path(wmkernels.__file__).parent
    shutil.copytree(src, tmp_path / "wmkernels",
                    ignore=shutil.ignore_patterns("_C*.so", "_C*.pyd", "__pycache__"))
    return tmp_path / "wmkernels"


def _probe(tmp_path: Path) -> str:
    # -S: no .pth files, so an editable install's finder cannot supply the real extension
    site = Path(torch.__file__).parents[1]
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{site}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-S", "-c", PROBE], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert f"FILE {tmp_path}" in out.stdout  # the copy ran, not the installed package
    return out.stdout


@pytest.mark.parametrize("case", ["not-built", "not-loadable"])
def test_import_warns_once_and_backends_give_the_true_reason(tmp_path, case):
    pkg = _copy_without_extension(tmp_path)
    if case == "not-loadable":  # e.g. built against another torch
        (pkg / Path(wmkernels._extension._C.__file__).name).write_bytes(b"not an ELF file")
    out = _probe(tmp_path)
    assert "MESSAGE wmkernels: C++ extension" in out
    assert "WARNINGS 1" in out
    assert "pip install --no-build-isolation --force-reinstall --no-deps" in out
    reason = out.split("REASON ", 1)[1]
    assert "circular import" not in reason
    assert ("not built" if case == "not-built" else "does not load with torch") in reason
