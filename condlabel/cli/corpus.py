"""Commands that read corpora and write or read tagged output: convert, demo, inspect, status, lease."""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import tempfile
from pathlib import Path

from condlabel.cli.common import (
    Commands,
    Parser,
    json_flag,
    output_reader_flags,
    print_info,
    print_summary,
    run_config_flags,
)
from condlabel.config import (
    ConvertConfig,
    keys_help,
    load_convert_config,
    load_storage_config,
)
from condlabel.failures import (
    EXIT_OK,
)
from condlabel.preflight import preflight

log = logging.getLogger("condlabel")


def convert_flags(p: Parser) -> None:
    p.epilog = keys_help(ConvertConfig)
    run_config_flags(p)
    p.add_argument(
        "--input",
        dest="inputs",
        action="append",
        metavar="URI",
        help="input file, directory/prefix or glob (repeatable; replaces input.paths)",
    )
    p.add_argument("--output", metavar="URI", help="output prefix (replaces output.uri)")
    json_flag(p)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list the input files and, per file, the documents and chunks that "
        "would be labeled (chunks already in the output are skipped); label nothing",
    )
    p.add_argument(
        "--sample-fraction",
        type=float,
        metavar="F",
        help="label only the documents whose id hash falls in this fraction (0 < F <= 1): the "
        "same sample every run, extended by a larger F (replaces input.sample_fraction)",
    )
    p.add_argument(
        "--sample-stratified",
        action="store_true",
        help="with --sample-fraction: every input file keeps at least one document "
        "(input.sample_stratified)",
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

    overrides = list(args.overrides)
    if args.sample_fraction is not None:
        overrides.append(f"input.sample_fraction={args.sample_fraction!r}")
    if args.sample_stratified:
        overrides.append("input.sample_stratified=true")
    cfg = load_convert_config(args.config, overrides, args.inputs, args.output)
    log.debug("config: %s", json.dumps(cfg.redacted(), sort_keys=True))  # whole: -v, manifest
    preflight(cfg)
    if args.dry_run:
        print_info(dry_run(cfg, allow_mixed=args.allow_mixed), plan_lines, args.json)
        return EXIT_OK
    print_summary(run_conversion(cfg, allow_mixed=args.allow_mixed), args.json)
    return EXIT_OK


def demo_flags(p: Parser) -> None:
    p.add_argument("--output", metavar="DIR", help="work directory (default: a new temp dir)")
    p.add_argument(
        "--docs",
        type=int,
        default=None,
        metavar="N",
        help="use only the first N sample documents (default: all: the help topics and the "
        "standard-library module docstrings of at least 80 words of the Python running it, "
        "135 on CPython 3.11)",
    )
    run_config_flags(p)


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
    files, documents = write_sample_corpus(work / "corpus", limit=args.docs)
    print(f"sample corpus: {documents} documents in {len(files)} files in {work / 'corpus'}")
    # What the output is for: control tokens a model can be steered by. The demo adds VADER's
    # sentiment tokens (`condlabel[classify]`, which `make demo` installs) unless the config or
    # a --set names its own classifiers.
    overrides = list(args.overrides or [])
    own = args.config or any(o.split("=", 1)[0].strip() == "classifiers" for o in overrides)
    if not own and importlib.util.find_spec("vaderSentiment") is not None:
        overrides.insert(0, "classifiers=[{backend: vader}]")
    cfg = load_convert_config(
        args.config, overrides, inputs=[str(work / "corpus")], output=str(work / "tagged")
    )
    preflight(cfg)
    summary = run_conversion(cfg)
    print("\n".join(summary.lines()))
    info = summarize(read_tagged(cfg.output.uri, storage=cfg.storage))
    print("\n".join(inspect_lines(info, top=10)))
    print(
        "\ncontrol tokens come from the classifiers (here VADER's sentiment); `logprob` is the "
        "labeler's score of its own output, null for the keyphrase labeler, which generates "
        "nothing (a generative labeler, `hf`, `vllm` or `ct2`, fills it)"
    )
    print(f"\noutput: {cfg.output.uri}\nread it back: condlabel inspect {cfg.output.uri}")
    return EXIT_OK


def inspect_flags(p: Parser) -> None:
    output_reader_flags(p)
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
    print_info(info, lambda i: inspect_lines(i, args.top), args.json)
    if args.report:
        from condlabel.report import write_report

        path = write_report(args.report, info, table, source=args.uri)
        print(f"report: {path}", file=sys.stderr if args.json else sys.stdout)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    """Summarise the runs and totals of an output prefix.

    List the runs recorded under URI/_manifest/ (status, counts, time), the rows and labelers in
    the output, duplicate keys (should be 0), the current lease, and what the runs cost:
    actor-hours by resource, chunks and tokens; with prices (`--set cost.CPU_hour_usd=0.05`,
    `--set cost.GPU:A100_hour_usd=2.5`, one per resource) in USD, per million and per billion
    input tokens.
    """
    from condlabel.runs.costs import parse_costs
    from condlabel.runs.runstate import status_info, status_lines

    prices, overrides = parse_costs(args.overrides or [])
    storage = load_storage_config(args.config, overrides)
    print_info(status_info(args.uri, storage, prices), status_lines, args.json)
    return EXIT_OK


def lease_flags(p: Parser) -> None:
    p.add_argument("action", choices=["break"], help="break: remove the lease")
    p.add_argument("uri", metavar="URI", help="output prefix (local or s3://)")
    run_config_flags(p, storage_only=True)


def cmd_lease(args: argparse.Namespace) -> int:
    """Remove the writer lease of an output prefix so a new run can start at once.

    Use it when the run holding the lease died on another machine (on the same machine a dead
    holder's lease is taken over by the next run by itself); a live holder notices at its next
    renewal and stops with exit 4.
    """
    from condlabel.runs.runstate import break_lease

    held = break_lease(args.uri, load_storage_config(args.config, args.overrides))
    if held:
        print(
            f"removed the lease of run {held.get('run_id')} on {held.get('host')} "
            f"(pid {held.get('pid')})"
        )
    else:
        print(f"no lease at {args.uri}")
    return EXIT_OK


COMMANDS: Commands = {
    "convert": (convert_flags, cmd_convert),
    "demo": (demo_flags, cmd_demo),
    "inspect": (inspect_flags, cmd_inspect),
    "status": (output_reader_flags, cmd_status),
    "lease": (lease_flags, cmd_lease),
}
