"""The `hf` labeler on tiny models: loading (local, s3://, merged), batch-invariant scoring,
truncation, `condlabel merge`, and the whole pipeline on the S3 server.

The models are random (tests/tiny_models.py): their text is gibberish, but EOS is likely, so
sequences in a batch stop at different steps — the case that makes a score batch-dependent.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from conftest import _wait_for_port, free_port  # noqa: E402
from labeler_checks import (  # noqa: E402
    assert_fingerprint_sees,
    assert_rows_match,
    assert_same_label,
    label_on_s3,
    teacher_forced_logprob,
    upload_dir,
)
from tiny_models import sample_texts  # noqa: E402

from condlabel.config import HFLabelerConfig, LabelerConfig  # noqa: E402
from condlabel.labelers import build_labeler, labeler_fingerprint  # noqa: E402
from condlabel.labelers.hf import (  # noqa: E402
    HFLabeler,
    encoder_groups,
    fingerprint,
    plan_batches,
)
from condlabel.labelers.prompts import parse_label  # noqa: E402

TOL = 2e-4  # padded batches and merged weights change float32 rounding, not the math
NEW_TOKENS = 16


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return sample_texts(12, min_words=10, max_words=250, seed=7)


@pytest.fixture(scope="module", params=["t5", "llama"])
def model_pair(request):
    """(base dir, adapter dir) of each tiny architecture."""
    if request.param == "t5":
        return request.getfixturevalue("tiny_t5"), request.getfixturevalue("tiny_t5_adapter")
    return request.getfixturevalue("tiny_llama"), request.getfixturevalue("tiny_llama_adapter")


def _labeler(model, adapter=None, **options) -> HFLabeler:
    options.setdefault("max_new_tokens", NEW_TOKENS)
    return HFLabeler(HFLabelerConfig(model=str(model), adapter=adapter and str(adapter), **options))


def _same(a, b) -> None:
    assert_same_label(a, b, TOL, rel=TOL)


# --------------------------------------------------------------------------- config only


def test_fingerprint_is_computed_from_config_without_loading():
    base = LabelerConfig(
        backend="hf", model="google/flan-ul2", hf={"adapter": "rallio67/condlabeler-alpha"}
    )
    fp = labeler_fingerprint(base)
    assert fp.startswith("hf:flan-ul2+condlabeler-alpha:")

    changes = [
        {"revision": "abc"},
        {"adapter": None},
        {"temperature": 0.7},
        {"max_new_tokens": 60},
        {"prompt_template": "x {text}"},
        {"seed": 1},
        {"dtype": "float32"},
        {"max_input_tokens": 1024},
    ]
    # How fast, not what: batch sizes, device and cache leave outputs unchanged.
    ignored = [
        {"max_batch_size": 2},
        {"max_batch_tokens": 100},
        {"device": "cpu"},
        {"cache_dir": "/x"},
        {"max_encoder_padding": 0.5},
    ]
    assert_fingerprint_sees(fingerprint, base.backend_config(), changes, ignored)
    greedy = base.backend_config().model_copy(update={"do_sample": False})
    assert fingerprint(greedy) == fingerprint(greedy.model_copy(update={"seed": 5, "top_k": 9}))


def test_plan_batches_sorts_by_length_and_caps_rows_and_tokens():
    lengths = [5, 100, 7, 98, 6, 99, 300]
    batches = plan_batches(lengths, max_rows=3, max_tokens=10_000, new_tokens=10)
    assert batches == [[6, 1, 5], [3, 2, 4], [0]]
    # 2 * (100 + 10) > 200: the token cap splits before the row cap does
    assert plan_batches(lengths, max_rows=8, max_tokens=200, new_tokens=10)[1:3] == [[1], [5]]
    assert sorted(i for b in plan_batches(lengths, 2, 1, 0) for i in b) == list(range(7))


def test_encoder_groups_cap_padding_share_and_tokens():
    lengths = [100, 98, 97, 60, 58, 10]
    groups = [list(g) for g in encoder_groups(lengths, max_tokens=10_000, max_padding=0.05)]
    assert groups == [[0, 1, 2], [3, 4], [5]]
    for group in groups:  # padded positions within 1.05 x the rows' own tokens
        assert len(group) * max(lengths[i] for i in group) <= 1.05 * sum(lengths[i] for i in group)
    assert [list(g) for g in encoder_groups(lengths, 10_000, 0.0)] == [[0], [1], [2], [3], [4], [5]]
    assert [list(g) for g in encoder_groups(lengths, 200, 1.0)] == [[0, 1], [2, 3], [4, 5]]
    assert [list(g) for g in encoder_groups(lengths, 10_000, 100.0)] == [list(range(6))]
    assert encoder_groups([], 100, 0.05) == []


@pytest.mark.parametrize(
    ("raw", "synopsis", "tags", "ok"),
    [
        # the model card's full example
        (
            "Synopsis: The document outlines the conditional pretraining of large language models "
            "and provides information about the ChatGPT project. Tags: [ human language "
            "understanding, conditional pretraining, chatbots, machine learning]",
            "The document outlines the conditional pretraining of large language models and "
            "provides information about the ChatGPT project.",
            [
                "human language understanding",
                "conditional pretraining",
                "chatbots",
                "machine learning",
            ],
            True,
        ),
        ("Synopsis: Two\nlines. \nTags:\n[ a,\n b ]</s>", "Two lines.", ["a", "b"], True),
        ("Synopsis: Quotes. Tags: ['x', \"y\", , z,]", "Quotes.", ["x", "y", "z"], True),
        (
            "Synopsis: Spaces. Tags: [machine  learning, Machine learning]",
            "Spaces.",
            ["machine learning"],
            True,
        ),
        ("Synopsis: Singular. Tag: [only]<pad><pad>", "Singular.", ["only"], True),
        ("Synopsis: After. Tags: [a, b] and then noise, c", "After.", ["a", "b"], True),
        ("Synopsis: Special inside</s> the text<pad>", "Special inside the text", [], True),
        ("Synopsis: Tags: [a]", "", ["a"], False),
        ("<pad></s>", "", [], False),
    ],
)
def test_parser_edge_cases(raw, synopsis, tags, ok):
    parsed = parse_label(raw)
    assert (parsed.synopsis, parsed.tags, parsed.ok) == (synopsis, tags, ok)


def test_causal_prompt_ending_in_the_synopsis_marker_parses(tiny_llama):
    labeler = _labeler(
        tiny_llama, prompt_template="{text}\n\nSynopsis:", do_sample=False, max_new_tokens=4
    )
    result = labeler.label(["A short text."])[0]
    # The model continues after "Synopsis:", so the marker is prepended before parsing.
    assert result.parse_ok == bool(result.raw_output.split("Tags:")[0].strip())


# --------------------------------------------------------------------------- loading


def test_adapter_without_safetensors_is_refused(tiny_t5, tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(FileNotFoundError, match=r"safetensors only.*never unpickles"):
        _labeler(tiny_t5, tmp_path)


def test_merged_and_unmerged_give_the_same_outputs_and_scores(model_pair, texts, tmp_path):
    """The adapter merged at load, merged ahead of time, and left unmerged (a peft model
    scoring the labeler's own tokens) agree."""
    from peft import PeftModel

    from condlabel.models import merge_model

    base, adapter = model_pair
    batch = texts[:6]
    labeler = _labeler(base, adapter)
    merged_at_load = labeler.label(batch)
    merged_dir = merge_model(str(base), str(adapter), str(tmp_path / "merged"))
    merged_ahead = _labeler(merged_dir).label(batch)
    for a, b in zip(merged_at_load, merged_ahead, strict=True):
        _same(a, b)
    model_cls = type(labeler.model)
    unmerged = PeftModel.from_pretrained(model_cls.from_pretrained(str(base)), str(adapter)).eval()
    start = labeler.model.generation_config.decoder_start_token_id if labeler.seq2seq else None
    for (ids, _), result in zip(labeler.encode(batch), merged_at_load, strict=True):
        expected = teacher_forced_logprob(unmerged, ids, result.extra["generated_ids"], start)
        assert result.logprob == pytest.approx(expected, rel=TOL, abs=TOL)
    assert {p.name for p in (tmp_path / "merged").iterdir()} >= {"model.safetensors", "config.json"}
    assert not list((tmp_path / "merged").glob("*.bin"))
    # and the adapter matters: the base alone writes something else
    plain = _labeler(base).label(batch)
    assert [r.raw_output for r in plain] != [r.raw_output for r in merged_at_load]


# --------------------------------------------------------------------------- scoring


def _pick(labeler: HFLabeler, texts: list[str]):
    """A target that stops at EOS early, a companion that generates longer, one that stops
    even earlier, plus longer and shorter inputs — each labeled alone first."""
    alone = {t: labeler.label([t])[0] for t in texts}
    stopped = [t for t in texts if alone[t].num_generated_tokens < NEW_TOKENS]
    assert stopped, "no chunk stops at EOS: the tiny model should make EOS likely"
    target = max(stopped, key=lambda t: alone[t].num_generated_tokens)
    n = alone[target].num_generated_tokens
    longer_gen = max(texts, key=lambda t: alone[t].num_generated_tokens)
    earlier = [t for t in stopped if alone[t].num_generated_tokens < n]
    assert alone[longer_gen].num_generated_tokens > n and earlier
    by_input = sorted(texts, key=lambda t: alone[t].input_tokens)
    batch = list(dict.fromkeys([by_input[0], earlier[0], target, longer_gen, by_input[-1]]))
    assert len(batch) >= 4
    return alone, target, batch


@pytest.mark.parametrize("do_sample", [False, True], ids=["greedy", "sampled"])
def test_score_is_batch_invariant(model_pair, texts, do_sample):
    base, adapter = model_pair
    # One encoder group per call (seq2seq), so the target's input is padded to its batch's
    # longest; test_rows_leave_the_decoder_at_eos covers the default grouping.
    labeler = _labeler(
        base, adapter, do_sample=do_sample, max_batch_size=8, max_encoder_padding=100.0
    )
    alone, target, batch = _pick(labeler, texts)
    together = dict(zip(batch, labeler.label(batch), strict=True))
    for text in batch:  # every chunk, not only the target, is labeled as if alone
        _same(together[text], alone[text])
    assert together[target].padded_tokens > alone[target].padded_tokens  # it was padded


@pytest.mark.parametrize("do_sample", [False, True], ids=["greedy", "sampled"])
def test_rows_leave_the_decoder_at_eos(tiny_t5, tiny_t5_adapter, texts, do_sample):
    """Seq2seq decoding drops each row at its EOS: the decoder computes exactly the generated
    tokens (counted at the model's forward), the outputs are those of each chunk alone, and
    padded_tokens counts what was run."""
    labeler = _labeler(tiny_t5, tiny_t5_adapter, do_sample=do_sample, max_batch_size=8)
    alone, _, batch = _pick(labeler, texts)
    forward = labeler.model.forward
    decoder_rows = []

    def counting(*args, **kwargs):
        decoder_rows.append(kwargs["decoder_input_ids"].numel())
        return forward(*args, **kwargs)

    labeler.model.forward = counting
    together = labeler.label(batch)
    labeler.model.forward = forward
    generated = [r.num_generated_tokens for r in together]
    assert len(set(generated)) > 1  # rows stopped at different steps
    assert sum(decoder_rows) == sum(generated) < len(batch) * max(generated)
    for text, result in zip(batch, together, strict=True):
        _same(result, alone[text])
        assert result.padded_tokens >= result.input_tokens + result.num_generated_tokens
    encoded = sum(r.padded_tokens - r.num_generated_tokens for r in together)
    assert encoded <= 1.05 * sum(r.input_tokens for r in together)  # max_encoder_padding

    # Each length encoded apart: nothing but useful positions computed.
    exact = _labeler(
        tiny_t5, tiny_t5_adapter, do_sample=do_sample, max_batch_size=8, max_encoder_padding=0
    ).label(batch)
    for a, b in zip(exact, together, strict=True):
        _same(a, b)
        assert a.padded_tokens == a.input_tokens + a.num_generated_tokens


def test_encoding_in_slices_changes_nothing(tiny_t5, tiny_t5_adapter, texts):
    whole = _labeler(tiny_t5, tiny_t5_adapter).label(texts[:6])
    sliced = _labeler(tiny_t5, tiny_t5_adapter, max_encoder_tokens=300).label(texts[:6])
    for a, b in zip(whole, sliced, strict=True):
        _same(a, b)


def test_reruns_reproduce_samples_and_seed_changes_them(tiny_t5, tiny_t5_adapter, texts):
    first = _labeler(tiny_t5, tiny_t5_adapter, temperature=2.0, top_k=0, top_p=1.0)
    again = _labeler(tiny_t5, tiny_t5_adapter, temperature=2.0, top_k=0, top_p=1.0)
    other = _labeler(tiny_t5, tiny_t5_adapter, temperature=2.0, top_k=0, top_p=1.0, seed=1)
    a, b, c = first.label(texts), again.label(texts), other.label(texts)
    for x, y in zip(a, b, strict=True):
        _same(x, y)
    assert [r.raw_output for r in a] != [r.raw_output for r in c]


@pytest.mark.parametrize("do_sample", [False, True], ids=["greedy", "sampled"])
def test_score_equals_a_teacher_forced_forward_pass(model_pair, texts, do_sample):
    base, adapter = model_pair
    labeler = _labeler(base, adapter, do_sample=do_sample)
    batch = texts[:5]
    results = labeler.label(batch)
    model = labeler.model
    start = model.generation_config.decoder_start_token_id if labeler.seq2seq else None
    for (ids, _), result in zip(labeler.encode(batch), results, strict=True):
        generated = result.extra["generated_ids"]
        expected = teacher_forced_logprob(model, ids, generated, start)
        assert len(generated) == result.num_generated_tokens
        assert result.logprob == pytest.approx(expected, abs=TOL)
        assert result.mean_logprob == pytest.approx(expected / len(generated), abs=TOL)
        assert result.logprob <= 0 and math.isfinite(result.logprob)


@pytest.mark.parametrize("kind", ["t5", "llama"])
def test_a_label_cut_at_max_new_tokens_is_flagged(kind, request, texts):
    labeler = _labeler(request.getfixturevalue(f"tiny_{kind}"), max_new_tokens=4)
    results = labeler.label(texts)
    for r in results:
        ids = r.extra["generated_ids"]
        cut = ids[-1] not in labeler.eos_ids
        assert r.label_truncated == (cut or parse_label(r.raw_output).truncated)
        assert not cut or r.num_generated_tokens == 4
    assert {r.label_truncated for r in results} == {True, False}


def test_long_inputs_are_truncated_and_flagged(tiny_t5, tiny_llama):
    long_text = " ".join(sample_texts(1, min_words=3000, max_words=3000, seed=3))
    t5 = _labeler(tiny_t5, do_sample=False, max_new_tokens=4)
    short, cut = t5.label(["A short text.", long_text])
    assert not short.truncated and cut.truncated
    assert cut.input_tokens == t5.input_limit == 512  # the tokenizer's model_max_length
    assert t5.encode([long_text])[0][0][-1] == t5.tokenizer.eos_token_id  # </s> kept

    template = "Document: {text}\n\nSynopsis:"
    llama = _labeler(
        tiny_llama, do_sample=False, max_new_tokens=4, max_input_tokens=64, prompt_template=template
    )
    ((ids, truncated),) = llama.encode([long_text])
    assert truncated and len(ids) <= 64
    assert llama.tokenizer.decode(ids, skip_special_tokens=True).endswith("\n\nSynopsis:")
    assert llama.label([long_text])[0].truncated
    # causal: the positions left for generation bound the input (512 - 4)
    assert _labeler(tiny_llama, max_new_tokens=4).input_limit == 508


# --------------------------------------------------------------------------- object storage


@pytest.fixture()
def logged_s3(tmp_path):
    """A separate S3 server process whose request log we read (to count downloads)."""
    import s3fs

    exe = Path(sys.executable).parent / "moto_server"
    port = free_port()
    log_path = tmp_path / "moto.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out
        )
    _wait_for_port(port, proc)
    endpoint = f"http://127.0.0.1:{port}"
    fs = s3fs.S3FileSystem(
        client_kwargs={"endpoint_url": endpoint},
        skip_instance_cache=True,
        key="testing",
        secret="testing",
    )
    fs.mkdir("models")
    yield endpoint, fs, log_path
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)


def test_s3_model_is_downloaded_once_by_concurrent_processes(
    tiny_t5, tiny_t5_adapter, logged_s3, tmp_path, monkeypatch
):
    endpoint, fs, log_path = logged_s3
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    upload_dir(fs, tiny_t5, "models/t5")
    upload_dir(fs, tiny_t5_adapter, "models/t5-lora")
    from condlabel.config import StorageConfig
    from condlabel.models import fetch_model

    cache, n = tmp_path / "cache", 3
    storage = StorageConfig(endpoint_url=endpoint)
    # Fresh processes (as Ray actors are) that import only condlabel.models, not this module.
    with ProcessPoolExecutor(n, mp_context=get_context("spawn")) as pool:
        paths = list(pool.map(fetch_model, ["s3://models/t5"] * n, [storage] * n, [str(cache)] * n))
    assert len(set(paths)) == 1
    weights = [
        line
        for line in log_path.read_text().splitlines()
        if "GET /models/t5/model.safetensors" in line
    ]
    assert len(weights) == 1, weights  # three actors, one download
    local = Path(paths[0])
    assert (local / "model.safetensors").read_bytes() == (
        tiny_t5 / "model.safetensors"
    ).read_bytes()
    assert not [p for p in cache.iterdir() if p.name.startswith(".partial")]

    # Base model and adapter both from s3:// give what the local directories give.
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    texts = sample_texts(3, seed=11)
    from_s3 = _labeler("s3://models/t5", "s3://models/t5-lora", cache_dir=str(cache)).label(texts)
    from_disk = _labeler(tiny_t5, tiny_t5_adapter).label(texts)
    for a, b in zip(from_s3, from_disk, strict=True):
        _same(a, b)


def test_merge_command_round_trip_through_s3(
    tiny_t5, tiny_t5_adapter, s3_bucket, s3fs_client, tmp_path
):
    from condlabel.cli import main

    out = f"s3://{s3_bucket}/merged/t5-lora"
    rc = main(["merge", "--base", str(tiny_t5), "--adapter", str(tiny_t5_adapter), "--output", out])
    assert rc == 0
    names = {p.rsplit("/", 1)[-1] for p in s3fs_client.find(f"{s3_bucket}/merged/t5-lora")}
    assert {"model.safetensors", "config.json", "tokenizer.json", "condlabel_merge.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth"))]
    info = json.loads(s3fs_client.cat(f"{s3_bucket}/merged/t5-lora/condlabel_merge.json"))
    assert info["adapter"] == str(tiny_t5_adapter)

    texts = sample_texts(4, seed=12)
    merged = _labeler(out, cache_dir=str(tmp_path / "cache")).label(texts)
    reference = _labeler(tiny_t5, tiny_t5_adapter).label(texts)
    for a, b in zip(merged, reference, strict=True):
        _same(a, b)


def test_pipeline_with_the_hf_backend_reads_and_writes_s3(
    ray_local, s3_bucket, s3fs_client, tiny_t5, tiny_t5_adapter, tmp_path
):
    models = {"models/t5": tiny_t5, "models/t5-lora": tiny_t5_adapter}
    docs = sample_texts(10, min_words=30, max_words=220, seed=21)
    cfg, summary, table = label_on_s3(
        s3fs_client,
        s3_bucket,
        models,
        docs,
        [
            "labeler.backend=hf",
            f"labeler.model=s3://{s3_bucket}/models/t5",
            f"labeler.hf.adapter=s3://{s3_bucket}/models/t5-lora",
            f"labeler.cache_dir={tmp_path / 'cache'}",
            f"labeler.generation.max_new_tokens={NEW_TOKENS}",
            "labeler.hf.max_batch_size=4",
            "chunking.max_words=120",
            "compute.num_cpus_per_actor=1",
            "compute.actors=1",
            "compute.batch_size=8",
        ],
    )
    assert summary.padding_ratio is not None and summary.padding_ratio >= 1.0
    assert all(n >= 1 for n in table.column("num_generated_tokens").to_pylist())
    # The actor's labels are the labels of the same labeler run here, chunk by chunk.
    assert_rows_match(table, build_labeler(cfg.labeler), TOL)


def test_fingerprint_needs_neither_torch_nor_transformers():
    code = (
        "import sys\n"
        "from condlabel.config import LabelerConfig\n"
        "from condlabel.labelers import labeler_fingerprint\n"
        "print(labeler_fingerprint(LabelerConfig(backend='hf', model='m')))\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("hf:m:")
