"""Flags and printing shared by the commands."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

Parser = argparse.ArgumentParser
Handler = Callable[[argparse.Namespace], int]
# name -> (adds the command's flags, runs it)
Commands = dict[str, tuple[Callable[[Parser], None], Handler]]


def loudness_flags(p: Parser, default: Any) -> None:
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


def run_config_flags(p: Parser, storage_only: bool = False) -> None:
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


def json_flag(p: Parser, text: str = "print the final summary as JSON") -> None:
    p.add_argument("--json", action="store_true", help=text)


def output_reader_flags(p: Parser) -> None:
    """The output prefix to read, and how to print it (inspect, status)."""
    p.add_argument("uri", metavar="URI", help="output prefix written by convert")
    json_flag(p, "print JSON instead of text")
    run_config_flags(p, storage_only=True)


def print_summary(summary: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print("\n".join(summary.lines()))


def print_info(info: dict, lines: Callable[[dict], list[str]], as_json: bool) -> None:
    print(json.dumps(info, indent=2, default=str) if as_json else "\n".join(lines(info)))
