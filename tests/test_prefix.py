"""The shared prefix module: its import direction, and how a template renders labels and kept
input fields."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import condlabel.prefix
from condlabel.config import FormatConfig
from condlabel.prefix import meta_text, render_prefix, url_domain

# The prefix is a concept of the output contract: conversion, training and evaluation import
# it, so it may import only what sits below them.
ALLOWED = ("condlabel.config", "condlabel.schema", "condlabel.tags")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n.startswith("condlabel")}


def test_prefix_imports_only_config_schema_and_tags():
    found = _imports(Path(condlabel.prefix.__file__))
    assert found
    assert [n for n in found if not n.startswith(ALLOWED)] == []


def test_training_and_evaluation_take_the_prefix_from_the_shared_module():
    root = Path(condlabel.prefix.__file__).parent
    for path in sorted((root / "train").glob("*.py")):
        assert not [n for n in _imports(path) if n.startswith("condlabel.convert")], path
    for path in sorted((root / "distill").glob("*.py")):
        assert "condlabel.convert.format" not in _imports(path), path


# --------------------------------------------------------------------------- rendering

MECO = FormatConfig(prefix_template="{url_domain}\n\n")
TAGGED = FormatConfig(
    prefix_template="{control_tokens}{url_domain} ({meta.section})\nSynopsis: {synopsis} Tags: [{tags}]\n"
)


def test_a_template_line_whose_fields_are_all_empty_is_dropped():
    meta = {"url_domain": "", "meta.section": ""}
    prefix = render_prefix(TAGGED, "About cats.", ["cats"], [], True, meta)
    assert prefix == "Synopsis: About cats. Tags: [cats]\n"
    assert "None" not in prefix
    meta = {"url_domain": "a.org", "meta.section": ""}
    assert render_prefix(TAGGED, "S.", ["t"], ["<|pos|>"], True, meta).startswith(
        "<|pos|>a.org ()\n"
    )
    assert render_prefix(MECO, "", [], [], True, {"url_domain": ""}) == ""
    assert render_prefix(MECO, "", [], [], True, {"url_domain": "a.org"}) == "a.org\n\n"
    # Template text alone is no prefix.
    meco = FormatConfig(prefix_template="URL: {url_domain}\n\n")
    assert render_prefix(meco, "", [], [], True, {"url_domain": ""}) == ""
    assert render_prefix(meco, "S.", ["t"], ["<|pos|>"], True, {}) == ""
    assert render_prefix(meco, "", [], ["<|pos|>"], True, {}) == "<|pos|>"
    assert render_prefix(meco, "", [], [], True, {"url_domain": "a.org"}) == "URL: a.org\n\n"


def test_metadata_renders_for_unparsed_labels_and_labeler_none():
    meta = {"url_domain": "a.org", "meta.section": "pets"}
    failed = render_prefix(TAGGED, "junk", ["x"], ["<|neg|>"], False, meta)
    assert failed == "<|neg|>a.org (pets)\n"
    assert render_prefix(TAGGED, "", [], [], True, meta) == "a.org (pets)\n"  # labeler `none`
    # Without metadata, only the control tokens, as before.
    assert render_prefix(TAGGED, "junk", ["x"], ["<|neg|>"], False, {}) == "<|neg|>"
    assert render_prefix(FormatConfig(), "", [], ["<|pos|>"], False) == "<|pos|>"


@pytest.mark.parametrize(
    ("url", "domain"),
    [
        ("https://www.Example.COM/a?b=c", "example.com"),
        ("http://user:pw@News.BBC.co.uk:8080/x", "news.bbc.co.uk"),
        ("example.org/page", "example.org"),
        ("www.wikipedia.org", "wikipedia.org"),
        ("", ""),
        (None, ""),
        (17, ""),
        ("https://[::1]/", "::1"),
        ("http://[bad/", ""),
        ("https://wwwx.org", "wwwx.org"),
    ],
)
def test_url_domain(url, domain):
    assert url_domain(url) == domain


def test_kept_text_cannot_forge_a_control_token_or_a_line():
    assert meta_text("Games<|pos|>\nand more\r\n") == "Games and more"
    assert meta_text(True) == "true" and meta_text(None) == "" and meta_text(2.5) == "2.5"
    prefix = render_prefix(
        TAGGED, "S.", ["t"], [], True, {"meta.section": meta_text("a\n<|neg|>b")}
    )
    assert "<|neg|>" not in prefix and prefix.count("\n") == 2


# --------------------------------------------------------------------------- one prefix, everywhere

TEMPLATE = "{control_tokens}{url_domain} | {meta.section} | {meta.year}\nSynopsis: {synopsis} Tags: [{tags}]\n"
KEPT = {"link": "string", "section": "string", "year": "int64"}


def _labeled_table() -> pa.Table:
    from condlabel.schema import CHUNK_SCHEMA, LABEL_FIELDS, kept_fields

    rows = [
        (
            "a",
            "https://www.Games.example/x",
            "games",
            2021,
            "About a game.",
            ["games"],
            ["<|pos|>"],
            True,
        ),
        ("b", None, "news\n<|neg|>", None, "", [], [], True),  # labeler `none`
        ("c", "news.example", None, 1999, "junk", ["x"], ["<|neg|>"], False),  # did not parse
    ]
    columns: dict[str, list] = {f.name: [] for f in CHUNK_SCHEMA}
    columns.update({n: [] for n, _ in LABEL_FIELDS})
    columns.update({n: [] for n in KEPT})
    for doc, link, section, year, synopsis, tags, tokens, ok in rows:
        for name, value in [
            ("doc_id", doc),
            ("chunk_index", 0),
            ("num_chunks", 1),
            ("source", "s"),
            ("doc_hash", "h"),
            ("num_words", 3),
            ("text", f"Text of {doc}."),
            ("synopsis", synopsis),
            ("tags", tags),
            ("control_tokens", tokens),
            ("scores", []),
            ("logprob", None),
            ("mean_logprob", None),
            ("num_generated_tokens", 0),
            ("parse_ok", ok),
            ("truncated", False),
            ("label_truncated", False),
            ("input_tokens", None),
            ("raw_output", ""),
            ("labeler", "test"),
            ("link", link),
            ("section", section),
            ("year", year),
        ]:
            columns[name].append(value)
    schema = pa.schema(
        list(CHUNK_SCHEMA) + [pa.field(n, t) for n, t in LABEL_FIELDS] + kept_fields(KEPT)
    )
    return pa.Table.from_pydict(columns, schema=schema)


def test_conversion_and_training_render_the_same_prefix_from_one_row(tmp_path):
    from condlabel.config import InputConfig, TrainDataConfig
    from condlabel.convert.stages import format_table
    from condlabel.train.data import training_prefix

    fmt = FormatConfig(prefix_template=TEMPLATE)
    inputs = InputConfig(keep_fields=KEPT, url_field="link")
    shard = tmp_path / "shard.parquet"
    pq.write_table(format_table(fmt, _labeled_table(), "run", None, inputs), shard)
    rows = pq.read_table(shard).to_pylist()  # what training reads from the shards
    data = TrainDataConfig(untagged_fraction=0, format=fmt, url_field="link")
    prefixes = []
    for row in rows:
        prefix = training_prefix(row, data, random.Random(0))
        assert row["conditional_text"] == prefix + row["text"]
        prefixes.append(prefix)
    assert prefixes == [
        "<|pos|>games.example | games | 2021\nSynopsis: About a game. Tags: [games]\n",
        " | news | \n",
        "<|neg|>news.example |  | 1999\n",
    ]


def test_an_eval_conditional_renders_as_training_renders_a_row():
    from condlabel.config import ConditionalConfig, EvalConfig, TrainDataConfig
    from condlabel.train.data import training_prefix
    from condlabel.train.evaluate import conditional_prefix

    fmt = FormatConfig(prefix_template=TEMPLATE)
    cond = ConditionalConfig(
        control_tokens=["<|pos|>"],
        meta={"url_domain": "www.Games.example", "meta.section": "games"},
    )
    cfg = EvalConfig(conditionals=[cond], prefix_template=fmt.prefix_template)
    row = {
        "link": "https://games.example/",
        "section": "games",
        "year": None,
        "synopsis": "",
        "tags": [],
        "control_tokens": ["<|pos|>"],
        "parse_ok": True,
    }
    data = TrainDataConfig(untagged_fraction=0, format=fmt, url_field="link")
    assert conditional_prefix(cfg, cond) == training_prefix(row, data, random.Random(0))
    assert conditional_prefix(cfg, cond) == "<|pos|>games.example | games | \n"


def test_an_eval_conditional_names_only_fields_of_the_template():
    from condlabel.config import ConditionalConfig, EvalConfig

    with pytest.raises(ValueError, match=r"not in prefix_template"):
        EvalConfig(conditionals=[ConditionalConfig(meta={"url_domain": "a.org"})])
    with pytest.raises(ValueError, match="url_domain"):
        ConditionalConfig(meta={"section": "games"})


def test_training_refuses_a_template_field_its_shards_lack(tmp_path):
    from condlabel.config import ConfigError, StorageConfig
    from condlabel.train.dataset import _training_dataset

    shard = tmp_path / "part.parquet"
    pq.write_table(
        pa.table(
            {
                "text": ["x"],
                "synopsis": [""],
                "tags": [[]],
                "control_tokens": [[]],
                "parse_ok": [True],
            }
        ),
        shard,
    )
    with pytest.raises(ConfigError, match="'section'"):
        _training_dataset([str(shard)], StorageConfig(), ("section",), [[str(shard)]])
