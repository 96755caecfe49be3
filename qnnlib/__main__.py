"""Command line: ``python -m qnnlib list | run NAME [...] | redo-final FILE | show FILE``.

``run`` takes the name of a training experiment (``mnist-cnn3``, …), of a fragility table
(``fragility-mnist-cnn3``, …) or of a defence test (``defence-mnist-cnn3``); the last two are
computed from the recorded network in ``--source`` (default ``book/results``). ``show`` summarises
any kind of results file.

Every error — a bad argument, an unknown experiment, a ``--set`` key or value outside its range,
an unusable ``--device`` or ``--out``, missing data, a corrupt or mismatched results file, a run
already being written by another process — prints ONE line on stderr and exits with status 2,
before any training starts where it can be detected up front. ``--debug`` shows the traceback
instead. Ctrl-C exits with 130 (the finished epochs are saved).
"""

from __future__ import annotations

import argparse
import sys


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own usage errors: one line, exit 2
        self.exit(2, "qnnlib: error: " + " ".join(message.split()) + "\n")


class CLIError(ValueError):
    """A command line the user can fix."""


def _parse_overrides(items: list[str]) -> dict:
    overrides = {}
    for text in items:
        if "=" not in text:
            raise CLIError(f"--set needs KEY=VALUE, got {text!r}")
        key, value = (part.strip() for part in text.split("=", 1))
        if not key:
            raise CLIError(f"--set needs KEY=VALUE, got {text!r}")
        if key in overrides:
            raise CLIError(f"--set {key} given twice")
        overrides[key] = value
    return overrides


def _parser() -> _Parser:
    debug = _Parser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the traceback of an error")
    parser = _Parser(prog="python -m qnnlib", description="Run and inspect the book's recorded experiments.",
                     parents=[debug])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    commands.add_parser("list", help="list the named experiments", parents=[debug])
    run = commands.add_parser("run", help="run (or resume) a named experiment", parents=[debug])
    run.add_argument("name")
    run.add_argument("--fast", action="store_true", help="the tiny fast-mode configuration")
    run.add_argument("--epochs", type=int, default=None)
    run.add_argument("--device", default=None, help="cpu, cuda, cuda:0 … (default: cuda if available)")
    run.add_argument("--out", default=None, help="folder for results (default: runs/)")
    run.add_argument("--no-resume", action="store_true", help="start again even if results exist")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    run.add_argument("--source", default=None, metavar="FOLDER",
                     help="fragility and defence tests: the folder holding the recorded network (default: book/results)")
    redo = commands.add_parser("redo-final", help="recompute a finished run's final evaluation from its weights",
                               parents=[debug])
    redo.add_argument("file")
    redo.add_argument("--device", default=None, help="cpu, cuda, cuda:0 … (default: cuda if available)")
    show = commands.add_parser("show", help="summarise a results file", parents=[debug])
    show.add_argument("file")
    return parser


def _derived(experiments, name: str):
    """``(runner, what it is, how its size is set)`` if ``name`` is computed from a recorded network, else None."""
    kinds = ((experiments.FRAGILITY_CONFIGS, experiments.run_fragility, "a fragility table",
              "its size is --set n_images=N"),
             (experiments.DEFENCE_CONFIGS, experiments.run_defence, "a defence test",
              "fine-tuning: --set finetune_epochs=N"))
    return next((kind[1:] for kind in kinds if name in kind[0]), None)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    try:
        from . import experiments

        if args.command == "list":
            print(experiments.describe())
            print(experiments.describe_fragility())
            print(experiments.describe_defence())
        elif args.command == "run" and (derived := _derived(experiments, args.name)):
            runner, what, size = derived
            overrides = _parse_overrides(args.set)
            if args.epochs is not None or "epochs" in overrides:
                raise CLIError(f"{args.name} is {what}: it has no epochs ({size})")
            path = runner(args.name, fast=args.fast, device=args.device, out=args.out, resume=not args.no_resume,
                          overrides=overrides, source_dir=args.source)
            print(f"results: {path}")
        elif args.command == "run":
            if args.source is not None:
                raise CLIError(f"--source is for fragility tables and defence tests "
                               f"({', '.join([*experiments.FRAGILITY_CONFIGS, *experiments.DEFENCE_CONFIGS])}), "
                               f"not for {args.name!r}")
            if args.name not in experiments.CONFIGS:
                raise CLIError(f"unknown experiment {args.name!r}; choose one of "
                               f"{sorted(experiments.CONFIGS) + sorted(experiments.FRAGILITY_CONFIGS) + sorted(experiments.DEFENCE_CONFIGS)}")
            overrides = _parse_overrides(args.set)
            if "epochs" in overrides and args.epochs is not None:
                raise CLIError("epochs given twice (--epochs and --set epochs)")
            if args.epochs is not None:
                overrides["epochs"] = args.epochs
            path = experiments.run(args.name, fast=args.fast, device=args.device, out=args.out,
                                   resume=not args.no_resume, overrides=overrides)
            print(f"results: {path}")
        elif args.command == "redo-final":
            print(f"results: {experiments.redo_final(args.file, device=args.device)}")
        elif experiments.is_fragility(args.file):
            print(experiments.show_fragility(args.file))
        elif experiments.is_defence(args.file):
            print(experiments.show_defence(args.file))
        else:
            print(experiments.show(args.file))
    except KeyboardInterrupt:
        if debug:
            raise
        print("qnnlib: interrupted; finished epochs (fragility tables: chunks; defence tests: units) are saved, "
              "run again to resume",
              file=sys.stderr)
        return 130
    except Exception as error:
        if debug:
            raise
        from .results import ResultsError

        if isinstance(error, (ValueError, OSError, ResultsError)):  # the user's to fix
            print(f"qnnlib: error: {_one_line(error)}", file=sys.stderr)
        else:  # a bug: say so, still in one line
            print(f"qnnlib: internal error ({type(error).__name__}): {_one_line(error)} "
                  "(run again with --debug for the traceback)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
