"""The `wmk` command."""

import json
import subprocess
import sys

from wmkernels import cli


def test_info_lists_backends(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "vq_lookup" in out and "reference" in out and "torch" in out


def test_bench_quick_writes_results(tmp_path, capsys):
    assert cli.main(["bench", "--op", "vq", "--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "vq.json").read_text())
    backends = {r["backend"] for r in result["rows"]}
    assert {"eager", "eager-onehot"} <= backends
    assert result["peaks"]["copy_GBps"] > 0 and result["peaks"]["matmul_TFLOPs"] > 0
    for row in result["rows"]:
        assert row["ms"] > 0 and row["speedup_vs_eager"] > 0
    assert (tmp_path / "vq.md").read_text().startswith("# vq on")
    assert (tmp_path / "vq.png").stat().st_size > 0
    assert any(s["backend"] == "compile" for s in result["skipped"])


def test_console_script_entry_point():
    out = subprocess.run([sys.executable, "-m", "wmkernels.cli", "info"], capture_output=True,
                         text=True, check=True).stdout
    assert "backends" in out
