"""`twofour convert` and `twofour inspect`: argument parsing only; the work is in pipeline.py and inspect.py."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from server.convert.methods import METHODS
from server.convert.recover import RecoverOptions


def add_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    convert = commands.add_parser("convert", help="prune a model to 2:4 and write it into a model repository")
    convert.add_argument("source", type=Path, help="a torch.export program (.pt2) or a Hugging Face model directory")
    convert.add_argument("--name", required=True, help="model name in the repository")
    convert.add_argument("--output-repository", type=Path, default=Path("model_repo"), help="model repository root")
    convert.add_argument("--version", type=int, default=None, help="version number (default: next free)")
    convert.add_argument("--method", choices=sorted(METHODS), default="sparsegpt", help="pruning method")
    convert.add_argument("--recover", action=argparse.BooleanOptionalAction, default=False,
                         help="after pruning: least-squares refit + block-wise distillation of the kept weights")
    convert.add_argument("--recover-steps", type=int, default=RecoverOptions.steps,
                         help="distillation steps per block")
    convert.add_argument("--recover-final-steps", type=int, default=RecoverOptions.final_steps,
                         help="whole-model distillation steps after the blocks")
    convert.add_argument("--recover-lr", type=float, default=RecoverOptions.learning_rate, help="distillation LR")
    convert.add_argument("--recover-bf16", action="store_true",
                         help="distil under CPU bf16 autocast (faster where the CPU has bf16; fp32 weights and state)")
    convert.add_argument("--augment", type=int, default=RecoverOptions.augment,
                         help="augmented copies of each calibration text (token replacement + span shuffle)")
    convert.add_argument("--keep-dense", type=int, default=0, metavar="K",
                         help="leave the K most sensitive eligible layers dense (default 0)")
    convert.add_argument("--calibration", type=Path, nargs="+", required=True,
                         help=".npz/.safetensors arrays named like the inputs, or text files (one sample a line); "
                              "several files are concatenated in order")
    convert.add_argument("--calibration-samples", type=int, default=128, help="samples used (first N; 0 = all)")
    convert.add_argument("--evaluation", type=Path, default=None,
                         help="held-out data for the agreement figures (default: the calibration data)")
    convert.add_argument("--skip", action="append", default=[], metavar="GLOB",
                         help="keep matching layers dense (repeatable)")
    convert.add_argument("--only", action="append", default=[], metavar="GLOB",
                         help="prune only matching layers (repeatable)")
    convert.add_argument("--max-batch-size", type=int, default=64, help="config max_batch_size")
    convert.add_argument("--dynamic-batching", action=argparse.BooleanOptionalAction, default=True,
                         help="enable dynamic batching in config.pbtxt")
    convert.add_argument("--max-accuracy-drop", type=float, default=None,
                         help="fail (writing nothing) when the evaluation drop exceeds this many points")
    convert.add_argument("--quantize", choices=["none", "fp8", "int8"], default="none",
                         help="store the 2:4 layers' kept values as float8_e4m3fn or int8 with a float32 scale per row")
    convert.add_argument("--quiet", action="store_true", help="no progress bars")
    convert.set_defaults(handler=run_convert)

    inspect = commands.add_parser("inspect", help="show a converted model: config, layers, stored report")
    inspect.add_argument("model", type=Path, help="a model directory, e.g. model_repo/mnist_mlp")
    inspect.add_argument("--version", type=int, default=None, help="version (default: latest)")
    inspect.add_argument("--url", default=None, help="also show GET /v2/models/NAME/sparsity from a running server")
    inspect.set_defaults(handler=run_inspect)


def run_convert(args: argparse.Namespace) -> int:
    from server.convert.pipeline import ConvertOptions, convert
    from server.convert.report import print_report

    options = ConvertOptions(
        source=args.source, name=args.name, output_repository=args.output_repository, calibration=args.calibration,
        method=args.method, version=args.version, calibration_samples=args.calibration_samples or None,
        evaluation=args.evaluation, skip=args.skip, only=args.only, max_batch_size=args.max_batch_size,
        dynamic_batching=args.dynamic_batching, max_accuracy_drop=args.max_accuracy_drop,
        recover=RecoverOptions(steps=args.recover_steps, final_steps=args.recover_final_steps,
                               learning_rate=args.recover_lr, augment=args.augment,
                               bf16=args.recover_bf16) if args.recover else None,
        show_progress=not args.quiet, keep_dense=args.keep_dense,
        quantize=args.quantize)
    try:
        result = convert(options)
    except (ValueError, OSError) as exc:
        print(f"twofour convert: {exc}", file=sys.stderr)
        return 1
    print_report(result.report, seconds=result.seconds)
    print(f"wrote {result.version_dir}")
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    from server.convert.inspect import inspect_model

    try:
        inspect_model(args.model, args.version, args.url)
    except (ValueError, OSError) as exc:
        print(f"twofour inspect: {exc}", file=sys.stderr)
        return 1
    return 0
