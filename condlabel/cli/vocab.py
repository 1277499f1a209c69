"""The tag vocabulary command: `condlabel vocab build URI --output vocab.json`."""

from __future__ import annotations

import argparse

from condlabel.cli.common import Commands, Parser, run_config_flags
from condlabel.config import load_storage_config
from condlabel.failures import EXIT_OK
from condlabel.tags.build import VocabularySettings

_DEFAULTS = VocabularySettings()


def vocab_flags(p: Parser) -> None:
    p.add_argument("action", choices=["build"], help="build: count, merge and write the map")
    p.add_argument("uri", metavar="URI", help="output prefix written by convert (local or s3://)")
    p.add_argument(
        "--output", required=True, metavar="FILE", help="vocabulary file to write (local or s3://)"
    )
    p.add_argument(
        "--min-count",
        type=int,
        default=_DEFAULTS.min_count,
        metavar="N",
        help="drop canonical tags carried by fewer chunks (default %(default)s)",
    )
    p.add_argument(
        "--similarity",
        type=float,
        default=_DEFAULTS.similarity,
        metavar="0-100",
        help="merge a tag into a more frequent one at least this similar (rapidfuzz ratio of "
        "the folded forms without spaces; default %(default)s; 101 turns it off)",
    )
    p.add_argument(
        "--min-fuzzy-length",
        type=int,
        default=_DEFAULTS.min_fuzzy_length,
        metavar="N",
        help="shorter tags never merge by similarity (default %(default)s)",
    )
    p.add_argument(
        "--no-plurals",
        dest="plurals",
        action="store_false",
        help="keep plurals apart from their singular (merged by default when both occur)",
    )
    run_config_flags(p, storage_only=True)


def cmd_vocab(args: argparse.Namespace) -> int:
    """Build a tag vocabulary from the tags of an output prefix.

    Count the tags of the latest version of every chunk under URI (the labeler's own words:
    `raw_tags` where a vocabulary already mapped them), merge variants (case, spacing and
    punctuation; plural into singular with inflect; near-duplicates with rapidfuzz), name each
    group by its most frequent spelling and drop groups carried by fewer than --min-count
    chunks. The result is a reviewable JSON file (canonical tag -> variants and counts; the
    dropped tags listed apart) for `format.tag_vocabulary`. Needs pip install
    'condlabel[vocab]'.
    """
    from condlabel.tags.build import build_vocabulary, count_tags, output_tag_rows, write_vocabulary

    storage = load_storage_config(args.config, args.overrides)
    settings = VocabularySettings(
        min_count=args.min_count,
        plurals=args.plurals,
        similarity=args.similarity,
        min_fuzzy_length=args.min_fuzzy_length,
    )
    counts = count_tags(output_tag_rows(args.uri, storage))
    content = build_vocabulary(counts, settings, source=args.uri)
    write_vocabulary(content, args.output, storage)
    tags, dropped = content["tags"], content["dropped"]
    print(
        f"{len(counts):,} raw tags -> {len(tags):,} canonical tags "
        f"({sum(len(t['variants']) for t in tags.values()):,} variants kept, "
        f"{len(dropped):,} below --min-count {settings.min_count} dropped): {args.output}"
    )
    return EXIT_OK


COMMANDS: Commands = {"vocab": (vocab_flags, cmd_vocab)}
