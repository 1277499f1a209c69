"""docs/configuration.md is generated from the config models; it must be what the generator
writes now, and name every key `--help` names."""

from __future__ import annotations

import re
from pathlib import Path

from condlabel.config import CONFIG_MODELS, describe_fields
from condlabel.config.docs import DEFAULT_PATH, main, render

REPO = Path(__file__).resolve().parents[1]


def test_generator_writes_into_the_repository_docs():
    assert DEFAULT_PATH == REPO / "docs" / "configuration.md"


def test_configuration_md_is_not_stale():
    written = DEFAULT_PATH.read_text(encoding="utf-8")
    assert written == render(), (
        "docs/configuration.md is stale: run `python -m condlabel.config.docs` and commit it"
    )


def _kind_part(text: str, kind: str) -> str:
    """The page's part on one command: from its heading to the next command's."""
    after = text.split(f"## `{kind}` (", 1)[1]
    return re.split(r"\n## `", after, maxsplit=1)[0]


def _documented(part: str, key: str) -> bool:
    """The key has its own row, or a section above it is referenced (`p.*`, or a whole
    top-level section `### `p`` that says which keys it shares)."""
    if f"`{key}`" in part:
        return True
    parts = key.replace("[]", "").split(".")
    for n in range(1, len(parts)):
        parent = ".".join(parts[:n])
        if f"`{parent}.*`" in part or f"`{parent}[].*`" in part:
            return True
        heading = f"### `{parent}`\n\n"
        if heading in part and part.split(heading, 1)[1].split("\n", 1)[0].count("Same keys as"):
            return True
    return False


def test_every_help_key_is_documented():
    text = render()
    missing = [
        f"{kind}: {key}"
        for kind, model in CONFIG_MODELS.items()
        for key, _, _ in describe_fields(model)
        if not _documented(_kind_part(text, kind), key)
    ]
    assert not missing, f"keys missing from docs/configuration.md: {missing}"


def test_check_mode_flags_a_stale_file(tmp_path, capsys):
    stale = tmp_path / "configuration.md"
    stale.write_text("# old\n", encoding="utf-8")
    assert main(["--output", str(stale), "--check"]) == 1
    assert "python -m condlabel.config.docs" in capsys.readouterr().err
    assert main(["--output", str(stale)]) == 0
    assert main(["--output", str(stale), "--check"]) == 0
    assert stale.read_text(encoding="utf-8") == render()
