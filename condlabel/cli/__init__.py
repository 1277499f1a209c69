"""`condlabel COMMAND ...`: the command line; each command parses its flags, loads its config
and calls one library function.

    convert   label a corpus and write tagged parquet shards (local or s3://)
    demo      build a sample corpus offline and convert it with the CPU labeler
    inspect   summarise a tagged output prefix (counts, tags, log-probs; --report: HTML)
    status    summarise the runs and totals of an output prefix
    lease     remove a dead run's writer lease (lease break URI)
    merge     merge a LoRA adapter into its base model and write it
    config    validate and print a resolved configuration of any kind
    train     finetune a causal LM on tagged shards (Ray Train)
    eval      measure how well a trained model honours its conditionals
    vocab     build a tag vocabulary (canonical tags and their variants) from an output
    distill   train a small student labeler on a teacher's labels, gate it, export it

Global options: --version; -v/--verbose (debug logs, and Ray's own logs on the console) and
-q/--quiet (only warnings and the summary), before or after the command.

Before any work, convert, demo, train and eval check that every configured component can be
built (`condlabel.preflight`: its extra is installed, its model holds safetensors weights).

Exit codes: 0 success, 2 usage or configuration (a bad key or value; no --input, an input path
that does not exist, a glob matching nothing, an input file of an unsupported kind; a missing
extra, named with its `pip install` line; a model without safetensors weights, named with the
missing file), 3 storage problem (unwritable output, unreachable endpoint), 4 run refused
(another writer holds the output, or labelers would mix), 1 anything else, 130 interrupted,
141 the reader of stdout went away (`| head`). The reason is always on the last line printed,
also for an error raised inside a Ray task or actor (its original exception, not Ray's
wrapper; `condlabel.failures`). Secrets and URL credentials never reach the output or the logs.

A command is a pair in `COMMANDS` (assembled from the modules of this package): a function that adds its flags and a handler whose
docstring is its --help (first line: what it does; the rest: details).
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import select
import sys
import textwrap

from condlabel import __version__
from condlabel.cli import corpus, distill, models, vocab
from condlabel.cli.common import Commands, Parser, loudness_flags
from condlabel.config import ConfigError
from condlabel.console import setup_logging
from condlabel.failures import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_PIPE_CLOSED,
    exit_code,
    reason,
    root_cause,
)

log = logging.getLogger("condlabel")

# name -> (adds the command's flags, runs it), in the order `condlabel --help` lists them.
COMMANDS: Commands = {**corpus.COMMANDS, **models.COMMANDS, **distill.COMMANDS, **vocab.COMMANDS}

# --------------------------------------------------------------------------- the parser


def build_parser() -> Parser:
    parser = Parser(
        prog="condlabel",
        description="Turn text corpora into conditional-pretraining data: chunk documents, label "
        "each chunk with a synopsis and tags on a Ray actor pool, write tagged parquet.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    loudness_flags(parser, default=False)
    # -v/-q also after the command (`condlabel convert -v`, and the ray_jobs/ entrypoints);
    # SUPPRESS there so a command without them keeps what was given before it.
    loudness = Parser(add_help=False)
    loudness_flags(loudness, default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (add_flags, handler) in COMMANDS.items():
        # `or name`: under `python -OO` docstrings are gone, and the parser must still build.
        summary, _, details = (inspect.getdoc(handler) or name).partition("\n\n")
        add_flags(
            sub.add_parser(
                name,
                help=summary[0].lower() + summary[1:].rstrip("."),
                # Wrapped here: the raw formatter keeps the epilog's key table as laid out.
                description=textwrap.fill(f"{summary} {details}", 88),
                formatter_class=argparse.RawDescriptionHelpFormatter,
                parents=[loudness],
            )
        )
    return parser


# --------------------------------------------------------------------------- running


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(quiet=args.quiet, verbose=args.verbose)
    code = _run(args)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return _reader_gone()
    return code


def _stdout_closed() -> bool:
    """Whether stdout's reader went away (a pipe without a reader polls as an error), rather
    than some other pipe or socket broke while the command ran."""
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poll.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll here, or stdout has no descriptor
        return True


def _reader_gone() -> int:
    """`condlabel status OUT --json | head`: the reader has what it wanted; stop quietly as a
    Unix tool does (no traceback, nor Python's complaint when it flushes stdout at exit)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a descriptor (captured by a test)
        pass
    return EXIT_PIPE_CLOSED


def _run(args: argparse.Namespace) -> int:
    try:
        return COMMANDS[args.command][1](args)
    except BrokenPipeError as exc:
        if _stdout_closed():
            return _reader_gone()
        return _failed(args, exc)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - every failure ends in its exit code and reason
        return _failed(args, exc)


def _failed(args: argparse.Namespace, exc: Exception) -> int:
    """Print the reason (called inside the `except`, so a traceback can be logged); the code."""
    cause = root_cause(exc)  # the error raised in a Ray task or actor, not Ray's wrapper
    code = exit_code(cause)
    if isinstance(cause, ConfigError):
        print(f"condlabel {args.command}: {cause}", file=sys.stderr)
    elif code == EXIT_FAILED:
        log.exception("condlabel %s failed", args.command)
    print(reason(cause), file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
