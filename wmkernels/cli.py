"""The `wmk` command: `wmk info`, `wmk bench`, and the model pipelines' commands.

Every command reports a user's mistake (a bad flag value, a missing, truncated, corrupt or
foreign checkpoint, an output path it cannot write) the same way: one line `wmk: error: ...`
on stderr and exit status 2, never a traceback. Argument checks that need no files are
argparse types defined here (`count`, `finite_float`, `device`); the pipelines' commands
raise ValueError or OSError for the rest and `main` turns those into that line.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import os
import platform
import sys
import tempfile
import warnings
from pathlib import Path
from typing import NoReturn

import torch

# A pipeline's commands are imported only when they run: `wmk info` and `wmk bench` must
# work without the `models` extra (safetensors, tqdm, ...).
MODEL_COMMANDS = {   # command: (models subpackage, function adding its parser, help)
    "genie": ("genie", "add_genie_parser", "Genie world model: train, play, evaluate"),
    "demo": ("genie", "add_demo_parser", "train, evaluate and play Genie on the embedded world"),
    "sora": ("sora", "add_sora_parser", "Sora-style text-to-video: train, sample, eval"),
    "jepa": ("jepa", "add_jepa_parser", "I-JEPA / V-JEPA training, probes, planning"),
}
MODELS_EXTRA = ("safetensors", "tqdm", "imageio", "PIL")   # pyproject.toml (PIL: pillow)
# What a command raises for bad input. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError)


def report(message: str) -> int:
    """Print the one-line error every `wmk` command uses; returns its exit status, 2."""
    print(f"wmk: error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


def fail(message: str) -> NoReturn:
    """End the command with `report`'s line and exit status 2."""
    raise SystemExit(report(message))


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors end in `fail`'s one line; sub-parsers created
    from it are of this class too."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("wmk").strip()   # "genie train"; "" at the top
        fail(f"{command + ': ' if command else ''}{message} (see `{self.prog} --help`)")


def count(minimum: int):
    """argparse type: an int >= `minimum` (counts of steps, clips, seeds, ...)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value
    parse.__name__ = f"int >= {minimum}"
    return parse


def finite_float(minimum: float | None = None, *, above: bool = False):
    """argparse type: a finite float, >= `minimum` (> with above=True) when given."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if minimum is not None and (value <= minimum if above else value < minimum):
            raise argparse.ArgumentTypeError(
                f"expected a number {'>' if above else '>='} {minimum:g}, got {text!r}")
        return value
    parse.__name__ = "finite float"
    return parse


def device(text: str) -> str:
    """argparse type for --device: "cpu", "cuda" or "cuda:N", CUDA only where this torch
    sees that device."""
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda") or (dev.type == "cpu" and dev.index):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(
                f"{text!r} asked for, but this torch ({torch.__version__}) sees no CUDA "
                "device; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(
                f"{text!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) "
                "are visible")
    return text


def writable_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Create the folder `path` (and its parents) if needed and check that files can be
    written in it; ValueError naming `flag` otherwise. Returns it as a Path."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {str(path)!r} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise ValueError(f"{flag} {str(path)!r} is not a writable folder: "
                         f"{err.strerror or err}") from None
    return path


def writable_file(path: str | os.PathLike, flag: str) -> Path:
    """Check that the file `path` can be written (its folder is created if needed); ValueError
    naming `flag` otherwise. Returns it as a Path."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {str(path)!r} is a folder, not a file")
    writable_dir(path.parent, f"the folder of {flag}")
    return path


def cmd_info(args) -> int:
    import wmkernels
    from wmkernels import _extension

    print(f"wmkernels {wmkernels.__version__}  python {platform.python_version()}  "
          f"torch {torch.__version__}")
    for pkg in ("triton", "numpy", "safetensors", "matplotlib", "imageio"):
        spec = importlib.util.find_spec(pkg)
        version = "not installed"
        if spec is not None:
            from importlib.metadata import PackageNotFoundError
            from importlib.metadata import version as dist_version

            try:
                version = dist_version(pkg)
            except PackageNotFoundError:
                version = "installed"
        print(f"  {pkg:<12} {version}")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            print(f"  cuda:{i}  {torch.cuda.get_device_name(i)}  (CUDA {torch.version.cuda})")
    else:
        print("  no CUDA device visible")
    ext = _extension.BUILD_INFO
    print(f"  extension: {'built, CUDA=' + str(ext['cuda']) if ext else _extension.LOAD_ERROR}")
    print("backends (op / device: backend = status):")
    for op, per_device in wmkernels.backends().items():
        for dev, row in per_device.items():
            for backend, status in row.items():
                print(f"  {op:<16} {dev:<5} {backend:<10} {status}")
    return 0


def cmd_bench(args) -> int:
    from wmkernels.bench import harness, peaks
    from wmkernels.bench.models import MODELS
    from wmkernels.bench.ops import OPS

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    ops = args.op or [*OPS, *MODELS]
    unknown = [op for op in ops if op not in (*OPS, *MODELS)]
    if unknown:
        raise ValueError(f"--op {unknown}: unknown; choose from {(*OPS, *MODELS)}")
    out_dir = harness.default_out_dir(device) if args.out is None else Path(args.out)
    if not args.no_write:
        writable_dir(out_dir)
    peak = peaks.measure(device)
    print(f"device {device}: copy {peak['copy_GBps']:.1f} GB/s, {peak['matmul_dtype']} matmul "
          f"{peak['matmul_TFLOPs']:.3f} TFLOP/s (measured now)")
    for op in ops:
        print(f"{op}:")
        result = harness.run_op(op, device, quick=args.quick, shapes=args.shape, peak=peak)
        if not args.no_write:
            for path in harness.write(result, out_dir):
                print(f"  wrote {path}")
    return 0


def _add_model_command(sub, name: str) -> None:
    package, adder, _ = MODEL_COMMANDS[name]
    try:
        module = importlib.import_module(f"wmkernels.models.{package}.cli")
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] not in MODELS_EXTRA:
            raise
        fail(f"`wmk {name}` needs the models extra (pip install 'wmkernels[models]'): {err}")
    getattr(module, adder)(sub)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `wmk` parser. Of the pipelines' commands only `command`'s parser is built (its
    module imported); the others appear in `wmk --help` by name."""
    parser = Parser(prog="wmk", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="versions, devices, and which backends run each op")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("bench", help="benchmark ops against eager PyTorch and peers")
    p.add_argument("--op", action="append",
                   help="op or model pipeline to run (repeatable); default: all")
    p.add_argument("--shape", action="append", help="only these shape names (repeatable)")
    p.add_argument("--device", type=device, choices=["cpu", "cuda"],
                   help="default: cuda if present")
    p.add_argument("--quick", action="store_true", help="tiny shapes: a smoke test")
    p.add_argument("--out", help="results folder (default bench/results/<device>)")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.set_defaults(func=cmd_bench)
    for name, (_, _, help_text) in MODEL_COMMANDS.items():
        if name == command:
            _add_model_command(sub, name)
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"wmk: warning: {' '.join(str(message).split())}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run `wmk argv...`; returns the exit status (2 for a user's mistake, after one line
    `wmk: error: ...` on stderr). Usage errors raise SystemExit(2) after that same line.
    Python warnings print as one line `wmk: warning: ...`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    with warnings.catch_warnings():
        warnings.showwarning = _warning_line
        args = build_parser(command).parse_args(argv)
        try:
            return int(args.func(args) or 0)
        except USER_ERRORS as err:
            return report(str(err))
        except KeyboardInterrupt:
            print("wmk: interrupted", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
