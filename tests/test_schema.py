"""The README's output-contract table says what `condlabel.schema` defines: the same columns, in
the same order, with the same types, and the same bookkeeping names."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa

from condlabel.schema import MANIFEST_DIR, OUTPUT_SCHEMA, REJECTS_DIR

README = Path(__file__).resolve().parents[1] / "README.md"


def contract_section() -> str:
    return README.read_text().split("### Output contract", 1)[1].split("\n#", 1)[0]


def contract_columns() -> list[tuple[str, str]]:
    """(column, type) as the table lists them; a row may name several columns and give one
    type for each, or one type for all."""
    columns = []
    for line in contract_section().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([^`]+)`", cells[0])
        # Split the type cell on the commas between types, not those inside list<...>/struct<...>.
        types = [t.strip() for t in re.split(r",\s*(?![^<>]*>)", cells[1])]
        if len(types) == 1:
            types = types * len(names)
        if len(types) != len(names):
            raise ValueError(f"README contract row names {names} but gives types {types}")
        columns += zip(names, types, strict=True)
    return columns


def readme_type(typ: pa.DataType) -> str:
    """How the README writes a type: pyarrow's name without the `item: ` of list fields."""
    return str(typ).replace("item: ", "")


def test_readme_contract_table_names_exactly_the_output_columns():
    listed = contract_columns()
    assert [name for name, _ in listed] == OUTPUT_SCHEMA.names
    assert listed == [(f.name, readme_type(f.type)) for f in OUTPUT_SCHEMA]


def test_readme_contract_names_the_bookkeeping_directories():
    section = contract_section()
    assert f"`{REJECTS_DIR}/`" in section and f"`{MANIFEST_DIR}/`" in section
