"""`condlabel ...`: convert, demo, inspect, config.

Exit codes: 0 success, 2 bad configuration or arguments, 3 storage problem (missing input,
unwritable output), 1 anything else. The reason is always on the last line printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import textwrap
from pathlib import Path

from condlabel.config import ConfigError, ConvertConfig, describe_fields, load_convert_config
from condlabel.storage import StorageError

log = logging.getLogger("condlabel")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_STORAGE = 0, 1, 2, 3


def _config_keys_epilog() -> str:
    rows = describe_fields(ConvertConfig)
    width = max(len(k) for k, _, _ in rows)
    lines = ["configuration keys (YAML file or --set key=value; default in brackets):"]
    for key, default, doc in rows:
        wrapped = textwrap.wrap(f"{doc} [{default}]", 100 - width - 4) or [f"[{default}]"]
        lines.append(f"  {key.ljust(width)}  {wrapped[0]}")
        lines.extend(f"  {' ' * width}  {more}" for more in wrapped[1:])
    return "\n".join(lines)


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE",
                   help="YAML run config; without it the embedded defaults are used")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set chunking.max_words=1000 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="condlabel",
        description="Turn text corpora into conditional-pretraining data: chunk documents, label "
        "each chunk with a synopsis and tags on a Ray actor pool, write tagged parquet.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and the summary")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter

    convert = sub.add_parser(
        "convert", help="label a corpus and write tagged parquet shards",
        description="Read documents from --input (files, directories/prefixes or globs; local, "
        "file:// or s3://), split them into chunks, label every chunk on a Ray actor pool and "
        "write parquet shards under --output. S3 endpoint and credentials come from the AWS "
        "environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, profiles, instance roles).",
        epilog=_config_keys_epilog(), formatter_class=fmt,
    )
    _add_config_args(convert)
    convert.add_argument("--input", dest="inputs", action="append", metavar="URI",
                         help="input file, directory/prefix or glob (repeatable; replaces input.paths)")
    convert.add_argument("--output", metavar="URI", help="output prefix (replaces output.uri)")
    convert.add_argument("--json", action="store_true", help="print the final summary as JSON")

    demo = sub.add_parser(
        "demo", help="build a sample corpus offline and convert it with the CPU labeler",
        description="Write a sample corpus built from text that ships with Python (help topics, "
        "module docstrings) as .jsonl, .jsonl.gz and .parquet, convert it with the embedded "
        "defaults and print where the output is, a summary and two sample rows.",
    )
    demo.add_argument("--output", metavar="DIR", help="work directory (default: a new temp dir)")
    demo.add_argument("--docs", type=int, default=None, metavar="N",
                      help="use only the first N sample documents (default: all, ~200)")
    _add_config_args(demo)

    inspect = sub.add_parser(
        "inspect", help="summarise a tagged output prefix (local or s3://)",
        description="Read every data shard under URI and print the row count, labeler "
        "fingerprints, parse-failure rate, the most frequent tags and sample rows.",
    )
    inspect.add_argument("uri", metavar="URI", help="output prefix written by convert")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.add_argument("--top", type=int, default=15, help="how many top tags to show")
    _add_config_args(inspect)

    config = sub.add_parser(
        "config", help="validate and print a resolved configuration (defaults + file + --set)",
        epilog=_config_keys_epilog(), formatter_class=fmt,
    )
    config.add_argument("--kind", default="convert",
                        help="which configuration: convert (default), or another registered kind "
                        "such as train or eval")
    _add_config_args(config)
    return parser


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )


def _print_summary(summary, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print("\n".join(summary.lines()))


def cmd_convert(args: argparse.Namespace) -> int:
    from condlabel.pipeline import run_conversion

    cfg = load_convert_config(args.config, args.overrides, args.inputs, args.output)
    log.info("config: %s", json.dumps(cfg.redacted(), sort_keys=True))
    summary = run_conversion(cfg)
    _print_summary(summary, args.json)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from condlabel.demo import write_sample_corpus
    from condlabel.pipeline import run_conversion
    from condlabel.readback import read_tagged, summarize

    work = Path(args.output or tempfile.mkdtemp(prefix="condlabel-demo-")).resolve()
    files = write_sample_corpus(work / "corpus", limit=args.docs)
    print(f"sample corpus: {len(files)} files in {work / 'corpus'}")
    cfg = load_convert_config(
        args.config, args.overrides, inputs=[str(work / "corpus")], output=str(work / "tagged")
    )
    summary = run_conversion(cfg)
    print("\n".join(summary.lines()))
    _print_inspect(summarize(read_tagged(cfg.output.uri, storage=cfg.storage)), top=10)
    print(f"\noutput: {cfg.output.uri}\nread it back: condlabel inspect {cfg.output.uri}")
    return EXIT_OK


def _print_inspect(info: dict, top: int) -> None:
    print(f"rows {info['rows']}  documents {info['documents']}  "
          f"parse failures {info['parse_failure_rate']:.1%}")
    for fp, n in info["labelers"].items():
        print(f"labeler {fp}: {n} rows")
    print("top tags:")
    for tag, n in info["top_tags"][:top]:
        print(f"  {n:6d}  {tag}")
    for row in info["samples"]:
        print(f"\n--- {row['doc_id']} chunk {row['chunk_index']} ({row['source']})")
        print(row["conditional_text"])


def cmd_inspect(args: argparse.Namespace) -> int:
    from condlabel.readback import read_tagged, summarize

    storage = load_convert_config(args.config, args.overrides).storage
    info = summarize(read_tagged(args.uri, storage=storage), top_tags=args.top)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        _print_inspect(info, args.top)
    return EXIT_OK


def cmd_config(args: argparse.Namespace) -> int:
    import yaml

    from condlabel.config import load_config

    cfg = load_config(args.kind, args.config, args.overrides)
    data = cfg.redacted() if hasattr(cfg, "redacted") else cfg.model_dump(mode="json")
    print(yaml.safe_dump(data, sort_keys=False), end="")
    return EXIT_OK


COMMANDS = {"convert": cmd_convert, "demo": cmd_demo, "inspect": cmd_inspect, "config": cmd_config}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.quiet)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"condlabel {args.command}: {exc}", file=sys.stderr)
        print(f"error: invalid configuration ({len(exc.problems)} problem(s))", file=sys.stderr)
        return EXIT_CONFIG
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STORAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        log.exception("condlabel %s failed", args.command)
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
