"""`twofour serve | convert | inspect`. Parsing only; the work happens in the modules each command names.

Serve flags are generated from `Settings` so the CLI, the TWOFOUR_* environment and the docs cannot drift:
every field `foo_bar` is the flag `--foo-bar`; a flag given on the command line wins over the environment.
"""

from __future__ import annotations

import argparse
import sys
import typing
from typing import Any, Sequence

from server.settings import Settings


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(Settings)
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        help_text = f"{field.description} (env TWOFOUR_{name.upper()})"
        hint = hints[name]
        origin = typing.get_origin(hint)
        if hint is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif origin is list:
            parser.add_argument(flag, dest=name, action="append", default=None, metavar="NAME", help=help_text)
        elif origin is typing.Literal:
            parser.add_argument(flag, dest=name, choices=typing.get_args(hint), default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=name, default=None, help=help_text)


def settings_from_args(args: argparse.Namespace) -> Settings:
    given = {name: getattr(args, name) for name in Settings.model_fields if getattr(args, name, None) is not None}
    return Settings(**given)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="twofour", description="Serve and convert 2:4-sparse PyTorch models.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve a model repository over KServe v2 gRPC + HTTP")
    _add_settings_flags(serve)
    try:
        from server.convert import cli as convert_cli
    except ImportError:  # the converter's optional dependencies are missing
        convert_cli = None  # type: ignore[assignment]
    if convert_cli is not None:
        convert_cli.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        from pydantic import ValidationError

        try:
            settings = settings_from_args(args)
        except ValidationError as exc:
            print(f"twofour serve: invalid setting: {exc}", file=sys.stderr)
            return 2
        from server.app import run

        return run(settings)
    handler: Any = getattr(args, "handler", None)
    if handler is None:
        print(f"twofour: unknown command {args.command}", file=sys.stderr)
        return 2
    return int(handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
