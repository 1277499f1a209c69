"""Imports run one way (docs/contributing.md), imports inside functions included:

    config <- schema, storage <- models <- labelers, classifiers <- convert, runs <- cli

train and readback read the output contract, never the conversion. A module's imports are read
from its source (ast), so a deferred import counts like any other."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "condlabel"

# (modules the rule is about, prefixes they must not import, why)
RULES = [
    ("condlabel.config", ["condlabel."], "config imports nothing above it"),
    ("condlabel.schema", ["condlabel."], "the contract imports only config"),
    ("condlabel.storage", ["condlabel."], "storage imports only config"),
    (
        "condlabel.labelers",
        [
            "condlabel.convert",
            "condlabel.runs",
            "condlabel.train",
            "condlabel.distill",
            "condlabel.cli",
        ],
        "labelers are below the conversion and training",
    ),
    (
        "condlabel.classifiers",
        [
            "condlabel.convert",
            "condlabel.runs",
            "condlabel.train",
            "condlabel.distill",
            "condlabel.cli",
        ],
        "classifiers are below the conversion and training",
    ),
    (
        "condlabel.models",
        ["condlabel.labelers", "condlabel.convert", "condlabel.runs"],
        "models is below the labelers",
    ),
    (
        "condlabel.train",
        ["condlabel.convert", "condlabel.runs", "condlabel.cli"],
        "train reads the contract",
    ),
    (
        "condlabel.readback",
        [
            "condlabel.convert",
            "condlabel.runs",
            "condlabel.labelers",
            "condlabel.train",
            "condlabel.distill",
        ],
        "readback reads the contract",
    ),
    (
        "condlabel.runs",
        ["condlabel.convert", "condlabel.cli", "condlabel.train"],
        "runs keep the books, the data path uses them",
    ),
    (
        "condlabel.prefix",
        ["condlabel.convert", "condlabel.runs", "condlabel.train", "condlabel.labelers"],
        "the prefix is shared",
    ),
    ("condlabel.current", ["condlabel."], "the current-row rule imports nothing"),
    ("condlabel.components", ["condlabel."], "the registry's plumbing imports nothing"),
]
# What a lower module may still import although a prefix above forbids it.
ALLOWED = {
    # `components` (what a registry entry holds, the entry-point groups) imports no condlabel.
    "condlabel.config": ["condlabel.config", "condlabel.components"],
    "condlabel.schema": ["condlabel.config", "condlabel.schema"],
    # `s3` (S3 options, conditional writes) and `storage_errors` are the storage layer's own.
    "condlabel.storage": [
        "condlabel.config",
        "condlabel.storage",
        "condlabel.s3",
        "condlabel.storage_errors",
    ],
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = ROOT.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def resolve(name: str) -> str:
    """`condlabel.a.b` as a module: the longest prefix that is one."""
    parts = name.split(".")
    while parts:
        if is_module(".".join(parts)):
            return ".".join(parts)
        parts.pop()
    return name


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    # Imports under `if TYPE_CHECKING:` never run: annotations only.
    typing_only = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for stmt in block.body
        for n in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("condlabel")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if not base.startswith("condlabel"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if is_module(sub) else base)
    return {resolve(n) for n in found}


GRAPH = {module_name(p): imports_of(p) for p in sorted(ROOT.rglob("*.py"))}


def under(name: str, prefix: str) -> bool:
    return name == prefix.rstrip(".") or name.startswith(
        prefix if prefix.endswith(".") else prefix + "."
    )


@pytest.mark.parametrize("owner, forbidden, why", RULES, ids=[r[0] for r in RULES])
def test_imports_run_one_way(owner, forbidden, why):
    problems = []
    for module, imported in GRAPH.items():
        if not under(module, owner):
            continue
        for name in sorted(imported):
            if any(under(name, a) for a in ALLOWED.get(owner, [])):
                continue
            if any(under(name, f) for f in forbidden) and not under(name, owner):
                problems.append(f"{module} imports {name}")
    assert not problems, f"{why}:\n" + "\n".join(problems)


def test_no_import_cycle():
    """Tarjan's strongly connected components over the module graph (package `__init__`s that
    re-export their own submodules excepted: Python imports the package first)."""
    graph = defaultdict(set)
    for module, imported in GRAPH.items():
        for name in imported:
            if name != module and name in GRAPH and not under(module, name):
                graph[module].add(name)
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v, counter=[0]):  # noqa: B006 - a counter shared by the recursion
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in list(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_pipeline_imports_at_most_five_condlabel_modules():
    imported = GRAPH["condlabel.convert.pipeline"]
    assert len(imported) <= 5, sorted(imported)


def test_modules_and_functions_stay_small_enough_to_read():
    """No module over 500 lines, no function over 80: past that, split by idea."""
    too_long = []
    for path in sorted(ROOT.rglob("*.py")):
        source = path.read_text()
        if source.count("\n") > 500:
            too_long.append(f"{path.relative_to(ROOT)}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > 80:
                    too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length}")
    assert not too_long, "\n".join(too_long)
