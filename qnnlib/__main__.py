"""Command line: ``python -m qnnlib list | run NAME [...] | show FILE``.

Errors the user can fix (unknown experiment, bad override, missing data, a corrupt or mismatched
results file) print one line on stderr and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own usage errors: one line, exit 2
        self.exit(2, f"qnnlib: error: {message}\n")


def _parse_override(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise ValueError(f"override must look like KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def main(argv=None) -> int:
    parser = _Parser(prog="python -m qnnlib", description="Run and inspect the book's recorded experiments.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    commands.add_parser("list", help="list the named experiments")
    run = commands.add_parser("run", help="run (or resume) a named experiment")
    run.add_argument("name")
    run.add_argument("--fast", action="store_true", help="the tiny fast-mode configuration")
    run.add_argument("--epochs", type=int, default=None)
    run.add_argument("--device", default=None, help="cpu, cuda, cuda:0 … (default: cuda if available)")
    run.add_argument("--out", default=None, help="folder for results (default: runs/)")
    run.add_argument("--no-resume", action="store_true", help="start again even if results exist")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    redo = commands.add_parser("redo-final", help="recompute a finished run's final evaluation from its weights")
    redo.add_argument("file")
    redo.add_argument("--device", default=None, help="cpu, cuda, cuda:0 … (default: cuda if available)")
    show = commands.add_parser("show", help="summarise a results file")
    show.add_argument("file")
    args = parser.parse_args(argv)

    from . import experiments
    from .results import ResultsError

    try:
        if args.command == "list":
            print(experiments.describe())
        elif args.command == "run":
            overrides = dict(_parse_override(item) for item in args.set)
            path = experiments.run(
                args.name, fast=args.fast, epochs=args.epochs, device=args.device, out=args.out,
                resume=not args.no_resume, **overrides,
            )
            print(f"results: {path}")
        elif args.command == "redo-final":
            print(f"results: {experiments.redo_final(args.file, device=args.device)}")
        else:
            print(experiments.show(args.file))
    except (ValueError, FileNotFoundError, ResultsError) as error:
        print("qnnlib: error: " + " ".join(str(error).split()), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qnnlib: interrupted; finished epochs are saved, run again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
