"""The `wmk` command: `wmk info`, `wmk bench`, and the model pipelines' commands."""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys

import torch


def cmd_info(args) -> int:
    import wmkernels
    from wmkernels import _extension

    print(f"wmkernels {wmkernels.__version__}  python {platform.python_version()}  "
          f"torch {torch.__version__}")
    for pkg in ("triton", "numpy", "einops", "safetensors", "matplotlib", "imageio"):
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
    from pathlib import Path

    from wmkernels.bench import harness, peaks
    from wmkernels.bench.ops import OPS

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    ops = args.op or [op for op in OPS if importlib.util.find_spec(f"wmkernels.bench.ops.{op}")]
    out_dir = Path(args.out) if args.out else harness.default_out_dir(device)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wmk", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="versions, devices, and which backends run each op")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("bench", help="benchmark ops against eager PyTorch and peers")
    p.add_argument("--op", action="append", help="op to run (repeatable); default: all")
    p.add_argument("--shape", action="append", help="only these shape names (repeatable)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda if present")
    p.add_argument("--quick", action="store_true", help="tiny shapes: a smoke test")
    p.add_argument("--out", help="results folder (default bench/results/<device>)")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.set_defaults(func=cmd_bench)
    _add_model_commands(sub)
    return parser


def _add_model_commands(sub) -> None:
    """Each pipeline contributes its own subcommands from models/<name>/cli.py."""
    for module, adders in (("genie", ("add_genie_parser", "add_demo_parser")),
                           ("sora", ("add_sora_parser",)), ("jepa", ("add_jepa_parser",))):
        name = f"wmkernels.models.{module}.cli"
        if importlib.util.find_spec(f"wmkernels.models.{module}") is None:
            continue
        if importlib.util.find_spec(name) is None:
            continue
        mod = importlib.import_module(name)
        for adder in adders:
            getattr(mod, adder)(sub)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
