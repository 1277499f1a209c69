"""condlabel.labelers.encoding: the one encoding the hf and vllm backends share (limits, EOS ids,
truncation); the backends' tests check that both feed a model the same ids through it."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
from tiny_models import build_tokenizer, sample_texts

from condlabel.labelers.encoding import DEFAULT_INPUT_LIMIT, eos_token_ids, prompt_encoding

TEMPLATE = "Document: {text}\n\nSynopsis:"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(build_tokenizer(tmp_path_factory.mktemp("tok"), "causal"))


def _encoding(tokenizer, **options):
    settings = {
        "configured_eos": (None, None),
        "positions": None,
        "causal": True,
        "max_new_tokens": 16,
        "max_input_tokens": None,
        "model": "tiny",
        "section": "labeler.test",
    }
    return prompt_encoding(tokenizer, TEMPLATE, **(settings | options))


def test_input_limit_rules(tokenizer):
    assert tokenizer.model_max_length == 512
    assert _encoding(tokenizer).input_limit == 512  # the tokenizer's, no context declared
    assert _encoding(tokenizer, positions=256).input_limit == 240  # causal: room to generate
    assert _encoding(tokenizer, positions=256, causal=False).input_limit == 256
    assert _encoding(tokenizer, positions=256, max_input_tokens=100).input_limit == 100
    assert _encoding(tokenizer, positions=256, max_input_tokens=400).input_limit == 240
    unlimited = copy.deepcopy(tokenizer)
    unlimited.model_max_length = int(1e30)  # what tokenizers without a limit say
    assert _encoding(unlimited, causal=False).input_limit == DEFAULT_INPUT_LIMIT


def test_a_limit_without_room_for_the_chunk_names_the_keys(tokenizer):
    with pytest.raises(ValueError, match=r"labeler.test: input limit 4 tokens.*max_input_tokens"):
        _encoding(tokenizer, max_input_tokens=4)
    with pytest.raises(ValueError, match=r"raise max_model_len or max_input_tokens, or lower"):
        _encoding(tokenizer, positions=20, context_key="max_model_len")


def test_long_chunks_are_cut_keeping_the_template(tokenizer):
    encoding = _encoding(tokenizer, max_input_tokens=64)
    short, long = "A short text.", " ".join(sample_texts(1, min_words=400, max_words=400))
    (short_ids, short_cut), (long_ids, long_cut) = encoding.encode([short, long])
    assert not short_cut and short_ids == encoding.encode_one(short)
    assert long_cut and len(long_ids) <= 64
    assert tokenizer.decode(long_ids, skip_special_tokens=True).startswith("Document: ")
    assert tokenizer.decode(long_ids, skip_special_tokens=True).endswith("\n\nSynopsis:")
    assert encoding.encode([]) == []


def test_eos_ids_come_from_the_first_source_that_names_any(tokenizer):
    eos = tokenizer.eos_token_id
    assert eos_token_ids((None, None), tokenizer, "m") == [eos]
    assert eos_token_ids(([7, 7, 9], 5), tokenizer, "m") == [7, 9]
    assert eos_token_ids((None, 5), tokenizer, "m") == [5]
    with pytest.raises(ValueError, match="model m: no EOS token id"):
        eos_token_ids((None, []), SimpleNamespace(eos_token_id=None), "m")
