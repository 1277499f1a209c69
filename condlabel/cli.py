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

Global options: --version; -v/--verbose (debug logs, and Ray's own logs on the console) and
-q/--quiet (only warnings and the summary), before or after the command.

Before any work, convert, demo, train and eval check that every configured component can be
built (`condlabel.preflight`: its extra is installed, its model holds safetensors weights).

Exit codes: 0 success, 2 bad configuration or arguments (also a missing extra, named with its
`pip install` line, and a model without safetensors weights, named with the missing file),
3 storage problem (missing input, unwritable output, unreachable endpoint), 4 run refused
(another writer holds the output, or labelers would mix), 1 anything else, 130 interrupted. The
reason is always on the last line printed, also for an error raised inside a Ray task or actor
(its original exception, not Ray's wrapper; `condlabel.failures`). Secrets and URL credentials
never reach the output or the logs.

A command is a pair in `COMMANDS`: a function that adds its flags and a handler whose
docstring is its --help (first line: what it does; the rest: details).
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from condlabel import __version__
from condlabel.config import (
    ConfigError,
    ConvertConfig,
    EvalConfig,
    TrainConfig,
    keys_help,
    load_config,
    load_convert_config,
    load_eval_config,
    load_storage_config,
    load_train_config,
)
from condlabel.console import setup_logging
from condlabel.failures import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    exit_code,
    reason,
    root_cause,
)
from condlabel.preflight import preflight

log = logging.getLogger("condlabel")

Parser = argparse.ArgumentParser

# --------------------------------------------------------------------------- the parser


def build_parser() -> Parser:
    parser = Parser(
        prog="condlabel",
        description="Turn text corpora into conditional-pretraining data: chunk documents, label "
        "each chunk with a synopsis and tags on a Ray actor pool, write tagged parquet.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _loudness_flags(parser, default=False)
    # -v/-q also after the command (`condlabel convert -v`, and the ray_jobs/ entrypoints);
    # SUPPRESS there so a command without them keeps what was given before it.
    loudness = Parser(add_help=False)
    _loudness_flags(loudness, default=argparse.SUPPRESS)
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


def _loudness_flags(p: Parser, default: Any) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="debug logs, and Ray's own logs on the console",
    )
    group.add_argument(
        "-q", "--quiet", action="store_true", default=default, help="only warnings and the summary"
    )


def _config_flags(p: Parser, storage_only: bool = False) -> None:
    """--config and --set; `storage_only`: commands that only read or write objects take the
    storage section of a config of any kind."""
    if storage_only:
        what = "a convert, train or eval config; only its storage: section is read"
        example = "storage.profile=lab"
    else:
        what = "YAML run config; without it the embedded defaults are used"
        example = "chunking.max_words=1000"
    p.add_argument("--config", metavar="FILE", help=what)
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override one config key, e.g. --set {example} (repeatable)",
    )


def _json_flag(p: Parser, text: str = "print the final summary as JSON") -> None:
    p.add_argument("--json", action="store_true", help=text)


def _output_reader_flags(p: Parser) -> None:
    """The output prefix to read, and how to print it (inspect, status)."""
    p.add_argument("uri", metavar="URI", help="output prefix written by convert")
    _json_flag(p, "print JSON instead of text")
    _config_flags(p, storage_only=True)


def _print_summary(summary: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print("\n".join(summary.lines()))


def _print_info(info: dict, lines: Callable[[dict], list[str]], as_json: bool) -> None:
    print(json.dumps(info, indent=2, default=str) if as_json else "\n".join(lines(info)))


# --------------------------------------------------------------------------- the commands


def convert_flags(p: Parser) -> None:
    p.epilog = keys_help(ConvertConfig)
    _config_flags(p)
    p.add_argument(
        "--input",
        dest="inputs",
        action="append",
        metavar="URI",
        help="input file, directory/prefix or glob (repeatable; replaces input.paths)",
    )
    p.add_argument("--output", metavar="URI", help="output prefix (replaces output.uri)")
    _json_flag(p)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list the input files and, per file, the documents and chunks that "
        "would be labeled (chunks already in the output are skipped); label nothing",
    )
    p.add_argument(
        "--allow-mixed",
        action="store_true",
        help="add rows to an output prefix that holds rows of another labeler "
        "fingerprint (refused by default)",
    )


def cmd_convert(args: argparse.Namespace) -> int:
    """Label a corpus and write tagged parquet shards.

    Read documents from --input (files, directories/prefixes or globs; local, file:// or s3://),
    split them into chunks, label every chunk on a Ray actor pool and write parquet shards under
    --output. S3 endpoint and credentials come from the AWS environment (AWS_ENDPOINT_URL,
    AWS_ACCESS_KEY_ID, profiles, instance roles).
    """
    from condlabel.convert.pipeline import dry_run, plan_lines, run_conversion

    cfg = load_convert_config(args.config, args.overrides, args.inputs, args.output)
    log.info("config: %s", json.dumps(cfg.redacted(), sort_keys=True))
    preflight(cfg)
    if args.dry_run:
        _print_info(dry_run(cfg, allow_mixed=args.allow_mixed), plan_lines, args.json)
        return EXIT_OK
    _print_summary(run_conversion(cfg, allow_mixed=args.allow_mixed), args.json)
    return EXIT_OK


def demo_flags(p: Parser) -> None:
    p.add_argument("--output", metavar="DIR", help="work directory (default: a new temp dir)")
    p.add_argument(
        "--docs",
        type=int,
        default=None,
        metavar="N",
        help="use only the first N sample documents (default: all, ~200)",
    )
    _config_flags(p)


def cmd_demo(args: argparse.Namespace) -> int:
    """Build a sample corpus offline and convert it with the CPU labeler.

    Write a sample corpus built from text that ships with Python (help topics, module
    docstrings) as .jsonl, .jsonl.gz and .parquet, convert it with the embedded defaults and
    print where the output is, a summary and two sample rows.
    """
    from condlabel.convert.pipeline import run_conversion
    from condlabel.demo import write_sample_corpus
    from condlabel.readback import inspect_lines, read_tagged, summarize

    work = Path(args.output or tempfile.mkdtemp(prefix="condlabel-demo-")).resolve()
    files = write_sample_corpus(work / "corpus", limit=args.docs)
    print(f"sample corpus: {len(files)} files in {work / 'corpus'}")
    cfg = load_convert_config(
        args.config, args.overrides, inputs=[str(work / "corpus")], output=str(work / "tagged")
    )
    preflight(cfg)
    summary = run_conversion(cfg)
    print("\n".join(summary.lines()))
    info = summarize(read_tagged(cfg.output.uri, storage=cfg.storage))
    print("\n".join(inspect_lines(info, top=10)))
    print(f"\noutput: {cfg.output.uri}\nread it back: condlabel inspect {cfg.output.uri}")
    return EXIT_OK


def inspect_flags(p: Parser) -> None:
    _output_reader_flags(p)
    p.add_argument(
        "--report",
        metavar="FILE.html",
        help="also write a self-contained HTML report with plots "
        "(needs: pip install 'condlabel[report]')",
    )
    p.add_argument("--top", type=int, default=15, help="how many top tags to show")
    p.add_argument("--samples", type=int, default=2, help="how many sample rows to show")


def cmd_inspect(args: argparse.Namespace) -> int:
    """Summarise a tagged output prefix (local or s3://).

    Read every data shard under URI and print the row and document counts, labeler
    fingerprints, parse-failure rate, tag frequencies, the log-prob distribution, chunk, word
    and token counts and sample rows; --report writes the same as an HTML page with plots.
    """
    from condlabel.readback import inspect_lines, inspect_output

    storage = load_storage_config(args.config, args.overrides)
    if args.report:
        from condlabel.report import require_matplotlib

        require_matplotlib()  # before reading anything: fail fast with the install line
    info, table = inspect_output(args.uri, storage=storage, top_tags=args.top, samples=args.samples)
    _print_info(info, lambda i: inspect_lines(i, args.top), args.json)
    if args.report:
        from condlabel.report import write_report

        path = write_report(args.report, info, table, source=args.uri)
        print(f"report: {path}", file=sys.stderr if args.json else sys.stdout)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    """Summarise the runs and totals of an output prefix.

    List the runs recorded under URI/_manifest/ (status, counts, time), the rows and labelers in
    the output, duplicate keys (should be 0) and the current lease.
    """
    from condlabel.convert.runstate import status_info, status_lines

    storage = load_storage_config(args.config, args.overrides)
    _print_info(status_info(args.uri, storage), status_lines, args.json)
    return EXIT_OK


def lease_flags(p: Parser) -> None:
    p.add_argument("action", choices=["break"], help="break: remove the lease")
    p.add_argument("uri", metavar="URI", help="output prefix (local or s3://)")
    _config_flags(p, storage_only=True)


def cmd_lease(args: argparse.Namespace) -> int:
    """Remove the writer lease of an output prefix so a new run can start at once.

    Use it when the run holding the lease died on another machine (on the same machine a dead
    holder's lease is taken over by the next run by itself); a live holder notices at its next
    renewal and stops with exit 4.
    """
    from condlabel.convert.runstate import break_lease

    held = break_lease(args.uri, load_storage_config(args.config, args.overrides))
    if held:
        print(
            f"removed the lease of run {held.get('run_id')} on {held.get('host')} "
            f"(pid {held.get('pid')})"
        )
    else:
        print(f"no lease at {args.uri}")
    return EXIT_OK


def merge_flags(p: Parser) -> None:
    p.add_argument("--base", required=True, metavar="MODEL", help="base model")
    p.add_argument("--adapter", required=True, metavar="ADAPTER", help="peft LoRA adapter")
    p.add_argument("--output", required=True, metavar="URI", help="where to write the merge")
    p.add_argument("--revision", help="hub revision of --base")
    p.add_argument("--adapter-revision", help="hub revision of --adapter")
    p.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        default="auto",
        help="dtype of the saved weights (auto: the base's)",
    )
    _config_flags(p, storage_only=True)


def cmd_merge(args: argparse.Namespace) -> int:
    """Merge a LoRA adapter into its base model and write it (safetensors).

    Load --base and --adapter (local directory, s3:// prefix or hub id; safetensors only), merge
    the adapter into the weights (float32 on the CPU, so the merge is exact) and write the
    merged model and tokenizer to --output (local directory or s3:// prefix). Point
    labeler.hf.model at the result and leave labeler.hf.adapter unset: a cluster merges once
    and every actor loads merged weights.
    """
    from condlabel.models import merge_model
    from condlabel.preflight import HF_LABELER, Weights, check

    storage = load_storage_config(args.config, args.overrides)
    weights = [Weights("--base", args.base), Weights("--adapter", args.adapter, adapter=True)]
    check([("merge", HF_LABELER)], weights, storage)
    uri = merge_model(
        args.base,
        args.adapter,
        args.output,
        revision=args.revision,
        adapter_revision=args.adapter_revision,
        dtype=args.dtype,
        storage=storage,
    )
    print(
        f"merged model written to {uri}\nuse it with: --set labeler.backend=hf "
        f"--set labeler.hf.model={uri}"
    )
    return EXIT_OK


def config_flags(p: Parser) -> None:
    p.epilog = keys_help(ConvertConfig)
    p.add_argument(
        "--kind",
        default="convert",
        help="which configuration: convert (default), or another registered kind "
        "such as train or eval",
    )
    _config_flags(p)


def cmd_config(args: argparse.Namespace) -> int:
    """Validate and print a resolved configuration (defaults + file + --set).

    Secrets are redacted. The keys below are those of a conversion; `condlabel train --help`
    and `condlabel eval --help` list theirs.
    """
    import yaml

    cfg = load_config(args.kind, args.config, args.overrides)
    data = cfg.redacted() if hasattr(cfg, "redacted") else cfg.model_dump(mode="json")
    print(yaml.safe_dump(data, sort_keys=False), end="")
    return EXIT_OK


def train_flags(p: Parser) -> None:
    p.epilog = keys_help(TrainConfig)
    _config_flags(p)
    p.add_argument(
        "--dry-run", action="store_true", help="check the inputs and print the plan; train nothing"
    )
    _json_flag(p)


def cmd_train(args: argparse.Namespace) -> int:
    """Finetune a causal LM on tagged shards (Ray Train).

    Stream the tagged parquet under data.paths (local or s3://) through Ray Data to a Ray Train
    worker group that finetunes model.path (full or LoRA, DDP or FSDP) on prefix + text.
    Checkpoints (Hugging Face format) go to checkpoint.storage_path every
    checkpoint.every_steps; rerunning with the same checkpoint.name resumes from the latest. The
    final model is exported to checkpoint.export_uri.
    """
    from condlabel.train.loop import plan_lines, plan_training, run_training

    cfg = load_train_config(args.config, args.overrides)
    log.info("config: %s", json.dumps(cfg.redacted(), sort_keys=True))
    preflight(cfg)
    if args.dry_run:
        print("\n".join(plan_lines(cfg, plan_training(cfg))))
        return EXIT_OK
    _print_summary(run_training(cfg), args.json)
    return EXIT_OK


def eval_flags(p: Parser) -> None:
    p.epilog = keys_help(EvalConfig)
    _config_flags(p)
    _json_flag(p, "print the report as JSON")


def cmd_eval(args: argparse.Namespace) -> int:
    """Measure how well a trained model honours its conditionals.

    Generate continuations under each configured conditional (control tokens, tags, synopsis)
    and unconditioned, relabel them with the configured classifiers or labeler, and print per
    conditional the misalignment score (share of generations whose labels contradict the
    conditional) next to the unconditioned baseline.
    """
    from condlabel.train.evaluate import run_evaluation

    cfg = load_eval_config(args.config, args.overrides)
    log.info("config: %s", json.dumps(cfg.redacted(), sort_keys=True))
    preflight(cfg)
    report = run_evaluation(cfg)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        print(f"model {report.model}; judges: {', '.join(report.judges)}")
        print(report.table())
        if cfg.output:
            print(f"report: {cfg.output}")
    return EXIT_OK


Handler = Callable[[argparse.Namespace], int]

# name -> (adds the command's flags, runs it), in the order `condlabel --help` lists them.
COMMANDS: dict[str, tuple[Callable[[Parser], None], Handler]] = {
    "convert": (convert_flags, cmd_convert),
    "demo": (demo_flags, cmd_demo),
    "inspect": (inspect_flags, cmd_inspect),
    "status": (_output_reader_flags, cmd_status),
    "lease": (lease_flags, cmd_lease),
    "merge": (merge_flags, cmd_merge),
    "config": (config_flags, cmd_config),
    "train": (train_flags, cmd_train),
    "eval": (eval_flags, cmd_eval),
}

# --------------------------------------------------------------------------- running


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(quiet=args.quiet, verbose=args.verbose)
    try:
        return _run(args)
    finally:
        sys.stdout.flush()


def _run(args: argparse.Namespace) -> int:
    try:
        return COMMANDS[args.command][1](args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
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
