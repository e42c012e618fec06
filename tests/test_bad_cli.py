"""Every `wmk` command through a table of bad inputs: corrupt, truncated, bit-flipped,
foreign and missing checkpoints, folders and files in the wrong place, output paths that
cannot be written, unknown configs and devices, negative or zero counts, non-finite numbers.

Each case must end with exit status 2 and exactly one line `wmk: error: ...` on stderr that
says what was wrong (the expected words), never a traceback. The cases run in-process
(`cli.main(argv)`): every one is refused before any real work, so a case that slips through
shows up as a long or failing test, not a dead run. One case goes through a real `wmk`
process to check the entry point end to end; `wmk info` without the models extra is in
tests/test_cli.py. The untrained checkpoints come from the smallest configs (seconds).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from wmkernels import cli


def _truncated(src: Path, dst: Path) -> str:
    dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    return str(dst)


def _bit_flipped(src: Path, dst: Path) -> str:
    """One bit flipped in the tensor bytes (past the JSON header): still a valid file."""
    data = bytearray(src.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    data[header + (len(data) - header) // 2] ^= 0x10
    dst.write_bytes(bytes(data))
    return str(dst)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Paths the table's argv templates name: good, corrupt and foreign checkpoints of each
    pipeline, a text file, an empty file, a folder, and a Genie run folder."""
    from wmkernels.models.common import save_checkpoint
    from wmkernels.models.genie.config import get_config as genie_config
    from wmkernels.models.genie.model import Genie
    from wmkernels.models.genie.model import save_checkpoint as save_genie
    from wmkernels.models.genie.pipeline import claim_run_folder
    from wmkernels.models.jepa.ac import ACWorldModel
    from wmkernels.models.jepa.config import ACConfig, EncoderConfig, IJEPAConfig, PredictorConfig
    from wmkernels.models.jepa.ijepa import IJEPA
    from wmkernels.models.sora.config import SoraConfig, SoraTraining
    from wmkernels.models.sora.dit import DiTConfig
    from wmkernels.models.sora.pipeline import Sora
    from wmkernels.models.sora.text import TextConfig, Tokenizer
    from wmkernels.models.sora.vae import VAEConfig

    d = tmp_path_factory.mktemp("bad_cli")
    torch.manual_seed(0)
    paths = {"dir": d / "folder", "text": d / "notes.txt", "empty": d / "empty.safetensors",
             "foreign": d / "foreign.safetensors", "missing": d / "missing.safetensors",
             "genie": d / "genie.safetensors", "sora": d / "sora.safetensors",
             "ijepa": d / "ijepa.safetensors", "ac": d / "ac.safetensors", "run": d / "run"}
    paths["dir"].mkdir()
    paths["text"].write_text("not a checkpoint\n")
    paths["empty"].write_bytes(b"")
    save_file({"weight": torch.zeros(3)}, str(paths["foreign"]))
    micro = genie_config("micro")
    save_genie(paths["genie"], Genie(micro))
    claim_run_folder(paths["run"], micro, 8)   # the settings of `genie train --config micro
    sora_cfg = SoraConfig(                     # --clips 8` (seed 0)
        frames=5, size=16, world_balls=1, world={"num_platforms": 0},
        vae=VAEConfig(channels=(8, 16, 16), latent_channels=4),
        text=TextConfig(dim=32, layers=1, heads=2, max_tokens=24),
        dit=DiTConfig(dim=64, depth=2, heads=2, max_frames=4, pooled_text=True),
        train=SoraTraining(clips=16, eval_clips=8, vae_steps=2, dit_steps=2, vae_batch=4,
                           dit_batch=4, sample_steps=3))
    Sora(sora_cfg, Tokenizer.from_captions(["red ball moves left"])).save(paths["sora"])
    enc = EncoderConfig(image_size=32, patch=4, dim=32, depth=1, heads=1)
    ijepa_cfg = IJEPAConfig(encoder=enc, predictor=PredictorConfig(dim=32, depth=1, heads=1))
    save_checkpoint(paths["ijepa"], IJEPA(ijepa_cfg),
                    configs={"model": ijepa_cfg, "jepa": {"variant": "ijepa"}})
    ac_cfg = ACConfig(encoder=enc, source="ijepa", dim=32, depth=1, heads=1)
    save_checkpoint(paths["ac"], ACWorldModel(ac_cfg),
                    configs={"model": ac_cfg, "jepa": {"variant": "ac"}})
    for name in ("genie", "sora", "ijepa", "ac"):
        paths[f"{name}_half"] = _truncated(paths[name], d / f"{name}_half.safetensors")
        paths[f"{name}_flip"] = _bit_flipped(paths[name], d / f"{name}_flip.safetensors")
    paths["under_file"] = paths["text"] / "sub"   # a folder that cannot be made
    return {k: str(v) for k, v in paths.items()}


# Ways a checkpoint argument can be wrong, with the words each error must say; {ck} is the
# pipeline's own checkpoint kind, {other} another pipeline's.
BAD_CHECKPOINTS = [
    ("{missing}", "does not exist|no checkpoint at|no JEPA run"),
    ("{dir}", "not a file|is a folder|no JEPA run"),
    ("{text}", "not a readable safetensors file"),
    ("{empty}", "not a readable safetensors file"),
    ("{foreign}", "is not a"),
    ("{%s_half}", "not a readable safetensors file"),
    ("{%s_flip}", "corrupt: its tensors do not match the checksum"),
    ("{%s}", "is not a|must be"),   # another pipeline's checkpoint
]


def _checkpoint_cases(argv: list[str], own: str, other: str) -> list:
    cases = []
    for path, words in BAD_CHECKPOINTS:
        ck = path % (other if path == "{%s}" else own) if "%s" in path else path
        cases.append(pytest.param([a.replace("CK", ck) for a in argv], words,
                                  id=" ".join(argv).replace("CK", ck)))
    return cases


def _cases(rows: list[tuple[str, str]]) -> list:
    return [pytest.param(argv.split(" "), words, id=argv) for argv, words in rows]


NO_CUDA = "sees no CUDA device|CUDA device\\(s\\) are visible"
CASES = [
    *_cases([
        # the top level and `wmk info` / `wmk bench`
        ("nope", "invalid choice"),
        ("info --verbose", "unrecognized arguments"),
        ("bench --op nope --no-write", "--op \\['nope'\\]: unknown"),
        ("bench --device tpu", "--device: expected cpu, cuda or cuda:N, got 'tpu'"),
        ("bench --device cuda:99", NO_CUDA),
        ("bench --op vq --out {text}", "--out .* is a file"),
        ("bench --op vq --out {under_file}", "--out .* is not a writable folder"),
        # genie train (and the shared training options of demo)
        ("genie", "required: genie_command"),
        ("genie train --config nope", "argument --config: invalid choice"),
        ("genie train --tokenizer-steps -1", "--tokenizer-steps: expected an integer >= 0"),
        ("genie train --lam-steps two", "--lam-steps: expected an integer, got 'two'"),
        ("genie train --dynamics-steps 1.5", "--dynamics-steps: expected an integer"),
        ("genie train --clips 0", "--clips: expected an integer >= 1, got 0"),
        ("genie train --seed -1", "--seed: expected an integer >= 0"),
        ("genie train --threads 0", "--threads: expected an integer >= 1"),
        ("genie train --device tpu", "--device: expected cpu, cuda or cuda:N, got 'tpu'"),
        ("genie train --device cuda:99", NO_CUDA),
        ("genie train --device cpu:1", "--device: expected cpu, cuda or cuda:N"),
        ("genie train --config micro --out {text}", "--out .* is a file, not a folder"),
        ("genie train --config micro --out {under_file}", "--out .* is not a writable folder"),
        ("genie train --config micro --clips 8 --out {run} --seed 5",
         "other settings \\(genie.train.seed: saved 0, now 5\\)"),
        ("genie train --config micro --clips 16 --out {run}", "data.clips: saved 8, now 16"),
        ("genie train --config micro --clips 8 --out {run} --lam-steps 9",
         "genie.train.lam_steps: saved 3, now 9"),
        ("demo --eval-clips 0", "--eval-clips: expected an integer >= 1, got 0"),
        ("demo --config nope", "argument --config: invalid choice"),
        ("demo --config micro --out {text}", "--out .* is a file"),
        ("demo --config micro --clips 8 --out {run} --seed 5", "genie.train.seed: saved 0"),
        ("demo --device tpu", "--device: expected cpu"),
        # genie play / eval, apart from their checkpoints
        ("genie play --checkpoint {genie} --actions 1,9", "--actions must be"),
        ("genie play --checkpoint {genie} --actions x", "--actions must be comma-separated"),
        ("genie play --checkpoint {genie} --actions ,", "--actions must be a non-empty"),
        ("genie play --checkpoint {genie} --actions 1,1,1,1,1,1", "plays at most 4"),
        ("genie play --checkpoint {genie} --actions 1 --name ../x", "--name must be a file"),
        ("genie play --checkpoint {genie} --actions 1 --name a/b", "--name must be a file"),
        ("genie play --checkpoint {genie} --actions 1 --name ..", "--name must be a file"),
        ("genie play --checkpoint {genie} --actions 1 --out {text}", "--out .* is a file"),
        ("genie play --checkpoint {genie} --actions 1 --prompt-seed -1", "--prompt-seed"),
        ("genie play --checkpoint {genie} --actions 1 --prompt-index -3", "--prompt-index"),
        ("genie play --checkpoint {genie} --actions 1 --seed -1", "--seed: expected"),
        ("genie play --checkpoint {genie} --actions 1 --device tpu", "--device: expected"),
        ("genie play --actions 1", "required: --checkpoint"),
        ("genie eval --checkpoint {genie} --seeds 0", "--seeds: expected an integer >= 1"),
        ("genie eval --checkpoint {genie} --clips 0", "--clips: expected an integer >= 1"),
        ("genie eval --checkpoint {genie} --json {dir}", "--json .* is a folder, not a file"),
        ("genie eval --checkpoint {genie} --json {under_file}/m.json", "not a writable folder"),
        ("genie eval --checkpoint {genie} --device cuda:99", NO_CUDA),
        # sora train / sample / eval
        ("sora train --config nope", "--config: config must be one of"),
        ("sora train --vae-steps -1", "--vae-steps: expected an integer >= 1"),
        ("sora train --dit-steps 0", "--dit-steps: expected an integer >= 1"),
        ("sora train --clips 0", "--clips: expected an integer >= 1"),
        ("sora train --dit-lr nan", "--dit-lr: expected a finite number"),
        ("sora train --dit-lr 0", "--dit-lr: expected a number > 0"),
        ("sora train --dit-lr=-1e-3", "--dit-lr: expected a number > 0"),
        ("sora train --dit-batch 0", "--dit-batch: expected an integer >= 1"),
        ("sora train --threads -2", "--threads: expected an integer >= 1"),
        ("sora train --device tpu", "--device: expected cpu"),
        ("sora train --device cuda:99", NO_CUDA),
        ("sora train --out {text}", "--out .* is a file"),
        ("sora train --out {under_file}", "--out .* is not a writable folder"),
        ("sora sample --prompt x --checkpoint {sora} --steps -1", "--steps: expected"),
        ("sora sample --prompt x --checkpoint {sora} --steps 0", "--steps: expected"),
        ("sora sample --prompt x --checkpoint {sora} --num 0", "--num: expected"),
        ("sora sample --prompt x --checkpoint {sora} --scale 0", "--scale: expected"),
        ("sora sample --prompt x --checkpoint {sora} --guidance nan", "--guidance: expected a"),
        ("sora sample --prompt x --checkpoint {sora} --guidance -1", "--guidance: expected a"),
        ("sora sample --prompt x --checkpoint {sora} --seed -1", "--seed: expected"),
        ("sora sample --prompt x --checkpoint {sora} --out {text}", "--out .* is a file"),
        ("sora sample --prompt x --checkpoint {sora} --device tpu", "--device: expected"),
        ("sora sample --prompt , --checkpoint {sora} --out {dir}", "--prompt: .*has no words"),
        ("sora sample --checkpoint {sora}", "required: --prompt"),
        ("sora eval --checkpoint {sora} --clips 0", "--clips: expected"),
        ("sora eval --checkpoint {sora} --probe-clips 0", "--probe-clips: expected"),
        ("sora eval --checkpoint {sora} --probe-steps -1", "--probe-steps: expected"),
        ("sora eval --checkpoint {sora} --guidance 1 inf", "--guidance: expected a finite"),
        ("sora eval --checkpoint {sora} --steps 0", "--steps: expected"),
        ("sora eval --checkpoint {sora} --threads 0", "--threads: expected"),
        ("sora eval --checkpoint {sora} --out {dir}", "--out .* is a folder, not a file"),
        ("sora eval --checkpoint {sora} --out {under_file}/m.json", "not a writable folder"),
        ("sora eval --checkpoint {sora} --probe {genie}", "is not a probe file"),
        ("sora eval --checkpoint {sora} --probe {text}", "probe file .* not a readable"),
        ("sora eval --checkpoint {sora} --probe {under_file}/p.safetensors",
         "not a writable folder"),
        # jepa train / probe / plan
        ("jepa train --variant nope", "argument --variant: invalid choice"),
        ("jepa train --variant ijepa --config nope", "--config: config for ijepa must be"),
        ("jepa train --variant ijepa --steps 0", "--steps: expected an integer >= 1"),
        ("jepa train --variant ijepa --steps -5", "--steps: expected an integer >= 1"),
        ("jepa train --variant ijepa --batch-size 0", "--batch-size: expected"),
        ("jepa train --variant ijepa --seed -1", "--seed: expected"),
        ("jepa train --variant ijepa --clips 0", "--clips: expected"),
        ("jepa train --variant vjepa --future-context -1", "--future-context: expected"),
        ("jepa train --variant vjepa --attention full", "--attention: invalid choice"),
        ("jepa train --variant ijepa --future-context 1", "apply to --variant vjepa only"),
        ("jepa train --variant ijepa --encoder {ijepa}", "--encoder applies to --variant ac"),
        ("jepa train --variant ijepa --device tpu", "--device: expected cpu"),
        ("jepa train --variant ijepa --device cuda:99", NO_CUDA),
        ("jepa train --variant ijepa --out {text}", "--out .* is a file"),
        ("jepa train --variant ijepa --out {under_file}", "--out .* is not a writable folder"),
        ("jepa train --variant ac", "--variant ac needs --encoder"),
        ("jepa train --variant ac --encoder {ac} --out {dir}", "must be an ijepa or vjepa run"),
        ("jepa probe --checkpoint {ijepa} --n-train 0", "--n-train: expected"),
        ("jepa probe --checkpoint {ijepa} --n-test -1", "--n-test: expected"),
        ("jepa probe --checkpoint {ijepa} --epochs 0", "--epochs: expected"),
        ("jepa probe --checkpoint {ijepa} --json {dir}", "--json .* is a folder"),
        ("jepa plan --checkpoint {ac}", "give --start SEED and --goal"),
        ("jepa plan --checkpoint {ac} --start 3", "give --start SEED and --goal"),
        ("jepa plan --checkpoint {ac} --start 3 --goal 9", "--goal action ids must be in"),
        ("jepa plan --checkpoint {ac} --start 3 --goal a,b", "--goal must be comma-separated"),
        ("jepa plan --checkpoint {ac} --start -1 --goal 1", "--start: expected"),
        ("jepa plan --checkpoint {ac} --episodes 0", "--episodes: expected"),
        ("jepa plan --checkpoint {ac} --episodes 1 --horizon 0", "--horizon: expected"),
        ("jepa plan --checkpoint {ac} --episodes 1 --samples 0", "--samples: expected"),
        ("jepa plan --checkpoint {ac} --episodes 1 --samples 4 --elites 9",
         "--elites \\(9\\) must be <= --samples \\(4\\)"),
        ("jepa plan --checkpoint {ac} --episodes 1 --iterations 0", "--iterations: expected"),
        ("jepa plan --checkpoint {ac} --episodes 1 --oracle -1", "--oracle: expected"),
        ("jepa plan --checkpoint {ac} --episodes 1 --json {dir}", "--json .* is a folder"),
    ]),
    *_checkpoint_cases(["genie", "play", "--checkpoint", "CK", "--actions", "1"],
                       "genie", "sora"),
    *_checkpoint_cases(["genie", "eval", "--checkpoint", "CK"], "genie", "ijepa"),
    *_checkpoint_cases(["sora", "sample", "--prompt", "x", "--checkpoint", "CK"],
                       "sora", "genie"),
    *_checkpoint_cases(["sora", "eval", "--checkpoint", "CK"], "sora", "ijepa"),
    *_checkpoint_cases(["sora", "train", "--config", "tiny", "--vae-checkpoint", "CK",
                        "--out", "{dir}"], "sora", "genie"),
    *_checkpoint_cases(["jepa", "probe", "--checkpoint", "CK"], "ijepa", "ac"),
    *_checkpoint_cases(["jepa", "plan", "--checkpoint", "CK", "--episodes", "1"],
                       "ac", "ijepa"),
    *_checkpoint_cases(["jepa", "train", "--variant", "ac", "--encoder", "CK",
                        "--out", "{dir}"], "ijepa", "sora"),
]


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    threads = torch.get_num_threads()   # the genie commands set one thread on a CPU
    yield
    torch.set_num_threads(threads)


def _run(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as exit_:
        return exit_.code


@pytest.mark.parametrize("argv, words", CASES)
def test_bad_input_gets_one_clear_line(argv, words, files, capsys, tmp_path, monkeypatch):
    import re

    monkeypatch.chdir(tmp_path)   # default output folders land here, never in the checkout
    argv = [a.format(**files) for a in argv]
    code = _run(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, f"exit {code}: {err[-2000:]}"
    assert "Traceback" not in err and len(lines) == 1, err[-2000:]
    assert lines[0].startswith("wmk: error: "), lines[0]
    assert re.search(words, lines[0]), lines[0]


def test_the_wmk_process_reports_a_bad_checkpoint_in_one_line(files):
    run = subprocess.run([sys.executable, "-m", "wmkernels.cli", "sora", "sample", "--prompt",
                          "x", "--checkpoint", files["sora_flip"]],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert run.stderr.splitlines() == [
        f"wmk: error: --checkpoint: checkpoint {files['sora_flip']!r} is corrupt: its tensors "
        "do not match the checksum saved with them"]


def test_a_checkpoint_without_a_checksum_loads_with_one_warning_line(files, tmp_path, capsys):
    """Checkpoints written before checksums were stored still load, and say so in one line."""
    from safetensors import safe_open

    from wmkernels.models.common.checkpoint_io import CHECKSUM_KEY

    with safe_open(files["genie"], framework="pt") as f:
        meta = {k: v for k, v in f.metadata().items() if k != CHECKSUM_KEY}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    old = tmp_path / "old.safetensors"
    save_file(tensors, str(old), metadata=meta)
    assert _run(["genie", "play", "--checkpoint", str(old), "--actions", "1",
                 "--out", str(tmp_path), "--device", "cpu"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"wmk: warning: checkpoint {str(old)!r} carries no tensor checksum (written before "
        "checksums were stored): loaded unverified"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="permissions do not bind root")
def test_a_read_only_out_folder_is_refused(tmp_path, capsys):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert _run(["sora", "train", "--out", str(folder)]) == 2
        assert _run(["jepa", "train", "--variant", "ijepa", "--out", str(folder / "sub")]) == 2
    finally:
        folder.chmod(0o700)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and all("is not a writable folder" in line for line in lines)
