"""Secrets at the edges: a secret given in a config file or with --set is read as the text given
(never as a YAML number), and neither it nor the credentials in a URL (`storage.endpoint_url`)
reach stdout, stderr, the logs or the run manifest, also when the config has an error."""

from __future__ import annotations

import logging

import pytest
from helpers import make_docs, write_jsonl
from pipeline_helpers import convert_args, output_rows

from condlabel.cli import main
from condlabel.config import load_config, load_convert_config, load_storage_config

SECRET = "12345678901234567890"  # YAML would read it as an int
KEY_ID = "AKIA0000SECRETKEYID"
ENDPOINT = "http://someuser:somepassword@127.0.0.1:9"
LEAKS = (SECRET, KEY_ID, "someuser", "somepassword")
SECRETS = [f"storage.secret_access_key={SECRET}", f"storage.access_key_id={KEY_ID}"]
ENDPOINT_SET = f"storage.endpoint_url={ENDPOINT}"


def _assert_no_leak(*texts: str) -> None:
    for text in texts:
        for leak in LEAKS:
            assert leak not in text, f"{leak!r} leaked"


def test_config_command_takes_a_numeric_secret_and_never_prints_it(capsys):
    args = ["config", "--set", f"storage.secret_access_key={SECRET}", "--set", SECRETS[1]]
    assert main(args) == 0
    out, err = capsys.readouterr()
    _assert_no_leak(out, err)
    assert "secret_access_key: '**redacted**'" in out


@pytest.mark.parametrize("kind", ["convert", "train", "eval"])
def test_a_config_error_beside_a_secret_never_shows_it(kind, capsys):
    args = ["config", "--kind", kind, "--set", "storage.retries=-1", "--set", ENDPOINT_SET]
    assert main([*args, *(a for s in SECRETS for a in ("--set", s))]) == 2
    out, err = capsys.readouterr()
    _assert_no_leak(out, err)
    assert "storage.retries" in err


def test_secret_sections_and_credential_urls_are_not_echoed(capsys):
    args = [
        "config",
        "--set",
        f"storage={{secret_access_key: {SECRET}, retries: x}}",
        "--set",
        f"chunking.max_words={ENDPOINT}",
    ]
    assert main(args) == 2
    out, err = capsys.readouterr()
    _assert_no_leak(out, err)
    assert "chunking.max_words" in err and "storage.retries" in err


def test_secrets_in_a_config_file_keep_their_text(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(
        f"storage:\n  secret_access_key: {SECRET}\n  access_key_id: 0x10\n  retries: 2\n"
    )
    for cfg in (load_convert_config(path), load_config("train", path)):
        assert cfg.storage.secret_access_key.get_secret_value() == SECRET
        assert cfg.storage.access_key_id.get_secret_value() == "0x10"
    assert load_storage_config(path).secret_access_key.get_secret_value() == SECRET
    value = load_convert_config(overrides=["storage.secret_access_key=a#b: c", SECRETS[1]]).storage
    assert value.secret_access_key.get_secret_value() == "a#b: c"  # not a YAML comment or map

    path.write_text(f"storage:\n  secret_access_key: {SECRET}\n  retrys: 3\n")
    assert main(["config", "--config", str(path)]) == 2
    path.write_text(f"storage:\n  secret_access_key: {SECRET}: oops\n")  # not valid YAML
    assert main(["config", "--config", str(path)]) == 2
    out, err = capsys.readouterr()
    _assert_no_leak(out, err)
    assert "storage.retrys: unknown key" in err and "line 2" in err


def test_redacted_strips_credentials_from_urls():
    cfg = load_convert_config(overrides=[ENDPOINT_SET, *SECRETS])
    dumped = cfg.redacted()
    assert dumped["storage"]["endpoint_url"] == "http://127.0.0.1:9"
    _assert_no_leak(str(dumped))
    assert cfg.storage.endpoint_url == ENDPOINT  # the config itself keeps what it needs


def test_convert_with_a_bad_key_beside_secrets_never_shows_them(tmp_path, capsys):
    src = write_jsonl(tmp_path / "a.jsonl", make_docs(1, "a"))
    args = convert_args([src], tmp_path / "out", *SECRETS, ENDPOINT_SET, "chunking.max_wrds=5")
    assert main(args) == 2
    out, err = capsys.readouterr()
    _assert_no_leak(out, err)
    assert "chunking.max_wrds: unknown key" in err


@pytest.mark.usefixtures("ray_local")
def test_a_conversion_logs_and_records_no_secret(tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)  # the whole config is logged at debug level
    src = write_jsonl(tmp_path / "a.jsonl", make_docs(2, "a"))
    out = tmp_path / "out"
    args = convert_args([src], out, *SECRETS, ENDPOINT_SET, "chunking.max_words=120")
    assert main(args) == 0
    assert output_rows(out).num_rows > 0
    manifests = [p.read_text() for p in (out / "_manifest").rglob("*") if p.is_file()]
    assert manifests and any("127.0.0.1:9" in m for m in manifests)  # the endpoint, no userinfo
    assert "config: " in caplog.text
    _assert_no_leak(*capsys.readouterr(), caplog.text, *manifests)


def test_secret_fields_are_found_from_the_models_at_any_depth():
    from pydantic import SecretStr

    from condlabel.config import StrictModel
    from condlabel.config.secrets import REDACTED, redact, secret_paths

    class Inner(StrictModel):
        token: SecretStr | None = None
        url: str = ""

    class Outer(StrictModel):
        items: list[Inner]
        keys: dict[str, SecretStr]
        inner: Inner | None = None

    paths = secret_paths(Outer)
    assert paths == {("items", "*", "token"), ("keys", "*"), ("inner", "token")}
    outer = Outer(items=[Inner(token=SECRET, url=ENDPOINT)], keys={"a": KEY_ID})
    dumped = redact(outer.model_dump(mode="json"), paths)
    assert dumped == {
        "items": [{"token": REDACTED, "url": "http://127.0.0.1:9"}],
        "keys": {"a": REDACTED},
        "inner": None,
    }
