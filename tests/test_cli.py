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


def test_info_runs_without_the_models_extra():
    """A pipeline is imported only when its command runs: `wmk info` and `wmk --help` work
    when safetensors (of the `models` extra) cannot be imported, and `wmk sora` says which
    extra it needs in one line."""
    script = ("import sys; sys.modules['safetensors'] = None\n"
              "from wmkernels import cli\n"
              "assert cli.main(['info']) == 0\n"
              "assert 'safetensors' not in sys.modules or sys.modules['safetensors'] is None\n"
              "try:\n"
              "    cli.main(['--help'])\n"
              "except SystemExit as e:\n"
              "    assert e.code == 0\n"
              "cli.main(['sora', 'eval'])\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 2, run.stderr
    assert "backends" in run.stdout and "genie" in run.stdout and "jepa" in run.stdout
    assert run.stderr.strip().splitlines() == [
        "wmk: error: `wmk sora` needs the models extra (pip install 'wmkernels[models]'): "
        "import of safetensors halted; None in sys.modules"]
