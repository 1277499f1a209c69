"""Third-party backends: a distribution that declares an entry point in the groups
`condlabel.labelers` / `condlabel.classifiers` adds a labeler or a classifier, configured as the
built-in ones are (`backend: <name>` and a section of that name), checked by the preflight and
recorded in the manifest. Here a real (if tiny) distribution: a `*.dist-info` with its
`entry_points.txt` beside its module, on the path, as `pip install` would leave it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from helpers import make_docs, write_jsonl
from pipeline_helpers import convert_args, output_rows

from condlabel.config import ConfigError, load_convert_config

PLUGIN = '''
"""condlabel_echo: a labeler that echoes each chunk's first words, and a classifier that tags
texts holding a word."""

from pydantic import BaseModel, ConfigDict

from condlabel.classifiers import ClassifierBackend, ClassifierResult
from condlabel.components import Extra
from condlabel.labelers import Backend, LabelResult, make_fingerprint


class EchoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    words: int = 3
    tag: str = "echo"


class EchoLabeler:
    def __init__(self, options: EchoConfig):
        self.options = options
        self.fingerprint = make_fingerprint("echo", options.model_dump())

    def label(self, texts):
        return [
            LabelResult(
                synopsis=" ".join(t.split()[: self.options.words]),
                tags=[self.options.tag],
                raw_output="",
                parse_ok=True,
            )
            for t in texts
        ]


def echo_options(cfg):
    return EchoConfig.model_validate(cfg.plugin_options or {})


labeler = Backend(
    build=lambda cfg: EchoLabeler(echo_options(cfg)),
    fingerprint=lambda cfg: make_fingerprint("echo", echo_options(cfg).model_dump()),
    config=EchoConfig,
    extra=Extra(("condlabel_echo_dep",), "pip install condlabel-echo"),
    packages=("condlabel-echo",),
)


class WordConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    word: str = "the"


class WordClassifier:
    def __init__(self, options, name):
        self.options, self.name = options, name
        self.fingerprint = f"word:{options.word}"

    def classify(self, texts):
        return [
            ClassifierResult(
                ["<|has-word|>"] if self.options.word in t.split() else [], {"hit": 1.0}
            )
            for t in texts
        ]


def word_options(cfg):
    return WordConfig.model_validate(cfg.plugin_options or {})


classifier = ClassifierBackend(
    build=lambda cfg, storage, device: WordClassifier(word_options(cfg), cfg.effective_name),
    fingerprint=lambda cfg: f"word:{word_options(cfg).word}",
    config=WordConfig,
    packages=("condlabel-echo",),
)
'''

ENTRY_POINTS = """\
[condlabel.labelers]
echo = condlabel_echo:labeler

[condlabel.classifiers]
word = condlabel_echo:classifier
"""


@pytest.fixture(scope="session")
def echo_plugin(tmp_path_factory):
    """The directory a `pip install condlabel-echo` would have filled, put on the path of this
    process (and, through PYTHONPATH, of the subprocesses the tests start)."""
    site = tmp_path_factory.mktemp("site")
    (site / "condlabel_echo.py").write_text(textwrap.dedent(PLUGIN))
    (site / "condlabel_echo_dep.py").write_text("")  # what its extra installs
    info = site / "condlabel_echo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: condlabel-echo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    sys.path.insert(0, str(site))
    yield site
    sys.path.remove(str(site))
    sys.modules.pop("condlabel_echo", None)


def _echo_settings(*extra: str) -> list[str]:
    return ["labeler.backend=echo", "labeler.echo={words: 2, tag: echoed}", *extra]


def test_a_plugin_backend_is_configured_like_a_built_in_one(echo_plugin):
    from condlabel.labelers import build_labeler, labeler_fingerprint

    cfg = load_convert_config(overrides=_echo_settings("classifiers=[{backend: word}]"))
    labeler = build_labeler(cfg.labeler)
    [result] = labeler.label(["one two three four"])
    assert (result.synopsis, result.tags) == ("one two", ["echoed"])
    assert labeler_fingerprint(cfg.labeler) == labeler.fingerprint
    assert cfg.classifiers[0].effective_name == "word"

    with pytest.raises(
        ConfigError, match=r"labeler\.backend: .*unknown backend 'echoo'; valid: .*, echo"
    ):
        load_convert_config(overrides=["labeler.backend=echoo"])


def test_preflight_checks_a_plugin_s_section_and_extra(echo_plugin, monkeypatch):
    from condlabel.preflight import preflight

    preflight(load_convert_config(overrides=_echo_settings()))
    with pytest.raises(ConfigError, match=r"labeler\.echo\.words: .*integer"):
        preflight(load_convert_config(overrides=_echo_settings("labeler.echo.words=many")))
    monkeypatch.setitem(sys.modules, "condlabel_echo_dep", None)  # as if its extra were missing
    with pytest.raises(ConfigError, match=r"labeler\.backend: needs condlabel_echo_dep.*echo"):
        preflight(load_convert_config(overrides=_echo_settings()))


def test_the_manifest_records_a_plugin_s_packages(echo_plugin):
    from condlabel.runs.runstate import versions

    assert versions()["condlabel-echo"] == "0.1"


@pytest.mark.slow
def test_a_conversion_runs_with_a_plugin_labeler_and_classifier(echo_plugin, tmp_path):
    """The installed plugin, in a `condlabel convert` of its own (a fresh process and Ray, whose
    workers find the plugin as the driver does)."""
    write_jsonl(tmp_path / "in" / "docs.jsonl", make_docs(6, "p"))
    out = tmp_path / "out"
    args = convert_args(
        [tmp_path / "in"],
        out,
        *_echo_settings("classifiers=[{backend: word, word: {word: the}}]"),
        "compute.num_cpus=2",
        "compute.num_cpus_per_actor=0.5",
        "output.lease_ttl_s=30",
    )
    path = os.pathsep.join(p for p in (str(echo_plugin), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=path, HF_HUB_OFFLINE="1")
    done = subprocess.run(
        [sys.executable, "-m", "condlabel.cli", *args, "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["rows_written"] == 6
    rows = output_rows(out).to_pylist()
    assert {tuple(r["tags"]) for r in rows} == {("echoed",)}
    assert all(len(r["synopsis"].split()) == 2 for r in rows)
    assert any(r["control_tokens"] == ["<|has-word|>"] for r in rows)
    assert all(r["labeler"].startswith("echo:") and "+word:the" in r["labeler"] for r in rows)
    manifests = list((out / "_manifest").glob("*.json"))
    assert json.loads(manifests[0].read_text())["versions"]["condlabel-echo"] == "0.1"
