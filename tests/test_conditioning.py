"""What makes conditioning learnable and faithful: distinct starting rows for new control tokens,
the cooldown without prefixes, training on the latest document versions only, and evaluation
prompts that are exactly what training showed the model."""

from __future__ import annotations

import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from lm_fixtures import sentiment_sentences, tagged_table

from condlabel.config import (
    ConditionalConfig,
    EvalConfig,
    GenerationSettings,
    TrainConfig,
    TrainDataConfig,
    build_config,
)
from condlabel.readback import read_tagged
from condlabel.train import data as train_data
from condlabel.train.checkpoint import load_for_training
from condlabel.train.data import (
    VERSION_COLUMNS,
    build_examples,
    cooldown_start,
    keep_rows,
    latest_row_keys,
    latest_row_keys_by_output,
    micro_batches,
    pack_examples,
    tokenize_examples,
)
from condlabel.train.evaluate import conditional_prefix, generate

POS, NEG, TOX = "<|pos|>", "<|neg|>", "<|toxic|>"


# --------------------------------------------------------------------------- new token rows


def _train_config(base_dir, **model) -> TrainConfig:
    return build_config(TrainConfig, {"model": {"path": str(base_dir), **model}})


def _rows(loaded, *tokens):
    weight = loaded.model.get_input_embeddings().weight.detach()
    return [weight[loaded.tokenizer.convert_tokens_to_ids(t)] for t in tokens]


def _typical_distance(base_dir) -> float:
    """Median distance between two of the base model's own embedding rows."""
    import torch
    from transformers import AutoModelForCausalLM

    weight = AutoModelForCausalLM.from_pretrained(base_dir).get_input_embeddings().weight.detach()
    pairs = torch.randint(0, weight.shape[0], (2, 500), generator=torch.Generator().manual_seed(0))
    return (weight[pairs[0]] - weight[pairs[1]]).norm(dim=1).median().item()


def test_mean_init_leaves_the_new_rows_practically_identical(tiny_gpt2_dir):
    """The failure of issue 13: transformers' default starts <|pos|> and <|neg|> as one vector."""
    loaded = load_for_training(_train_config(tiny_gpt2_dir, new_token_init="mean"))
    pos, neg = _rows(loaded, POS, NEG)
    assert (pos - neg).norm().item() < 0.01 * _typical_distance(tiny_gpt2_dir)


def test_random_init_gives_distinct_rows_at_the_vocabulary_scale(tiny_gpt2_dir):
    cfg = _train_config(tiny_gpt2_dir, new_token_init="random")
    pos, neg, tox = _rows(load_for_training(cfg), POS, NEG, TOX)
    typical = _typical_distance(tiny_gpt2_dir)
    for a, b in [(pos, neg), (pos, tox), (neg, tox)]:
        assert 0.5 * typical < (a - b).norm().item() < 2 * typical
    again = _rows(load_for_training(cfg), POS)[0]  # seeded: every worker and rerun agree
    assert (again - pos).norm().item() == 0


def test_words_init_is_the_mean_of_the_words_embeddings(tiny_gpt2_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    words = {POS: "wonderful lovely", NEG: "terrible awful"}  # no words for <|toxic|>
    cfg = _train_config(tiny_gpt2_dir, new_token_init="words", new_token_words=words)
    loaded = load_for_training(cfg)
    tok = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir).get_input_embeddings().weight
    for token, row in zip([POS, NEG], _rows(loaded, POS, NEG), strict=True):
        ids = [i for w in words[token].split() for i in tok(" " + w)["input_ids"]]
        assert torch.allclose(row, base[ids].detach().mean(dim=0), atol=1e-6)
    pos, neg, tox = _rows(loaded, POS, NEG, TOX)
    typical = _typical_distance(tiny_gpt2_dir)
    assert (pos - neg).norm().item() > 0.3 * typical
    assert (tox - pos).norm().item() > 0.5 * typical  # no words: a random row


def test_default_init_is_random_and_every_default_token_has_words(tiny_gpt2_dir):
    cfg = _train_config(tiny_gpt2_dir)
    assert cfg.model.new_token_init == "random"
    assert set(cfg.model.control_tokens) <= set(cfg.model.new_token_words)


# --------------------------------------------------------------------------- cooldown


class _Shard:
    """What `micro_batches` needs of a Ray Data shard."""

    def __init__(self, table: pa.Table):
        self.table = table

    def iter_batches(self, batch_size: int, batch_format: str, **_):
        for start in range(0, self.table.num_rows, batch_size):
            yield self.table.slice(start, batch_size)


@pytest.fixture(scope="module")
def tokenizer(tiny_gpt2_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    tok.add_tokens([POS, NEG], special_tokens=True)
    # A BOS apart from EOS (as Llama's): training never puts it before an example.
    tok.add_special_tokens({"bos_token": "<s>"})
    return tok


def test_cooldown_examples_carry_no_prefix(tokenizer, monkeypatch):
    monkeypatch.setattr(train_data, "ROWS_PER_BATCH", 8)
    cfg = build_config(
        TrainConfig,
        {
            "data": {
                "prefix": "control_tokens",
                "untagged_fraction": 0,
                "cooldown_fraction": 0.25,
            },
            "optimization": {"seq_len": 16, "micro_batch_size": 2, "max_steps": 40},
        },
    )
    assert cooldown_start(cfg) == 30
    table = tagged_table(sentiment_sentences(200, seed=2))
    control_ids = set(tokenizer.convert_tokens_to_ids([POS, NEG]))
    step = 0
    batches = micro_batches(_Shard(table), tokenizer, cfg, 0, 0, lambda: step >= 30)
    with_tokens = []
    while step < 40:  # the optimizer steps, as the training loop counts them
        ids, _ = next(batches)
        with_tokens.append(sum(i in control_ids for block in ids for i in block))
        assert all(len(block) == 16 for block in ids) and len(ids) == 2
        step += 1
    assert all(n > 0 for n in with_tokens[:30])  # every block holds sentences with a token
    assert with_tokens[30:] == [0] * 10


def _lopsided(n: int, pos_share: float) -> pa.Table:
    """`n` distinct sentences, the first `pos_share` of them `<|pos|>`, the rest `<|neg|>`."""
    table = tagged_table([f"Sentence number {i} of the stream." for i in range(n)])
    tokens = [[POS] if i < pos_share * n else [NEG] for i in range(n)]
    shuffled = random.Random(0).sample(tokens, n)
    column = table.schema.get_field_index("control_tokens")
    return table.set_column(column, "control_tokens", pa.array(shuffled, pa.list_(pa.string())))


def _token_counts(tokenizer) -> tuple[int, int, int]:
    """(`<|pos|>`, `<|neg|>`, examples) over one pass of 80/20 rows."""
    cfg = build_config(
        TrainConfig,
        {
            "data": {"prefix": "control_tokens", "untagged_fraction": 0},
            "optimization": {"seq_len": 32, "micro_batch_size": 2},
        },
    )
    pos, neg = tokenizer.convert_tokens_to_ids([POS, NEG])
    ids = [i for blocks, _ in micro_batches(_Shard(_lopsided(3000, 0.8)), tokenizer, cfg, 0, 0)
           for block in blocks for i in block]  # fmt: skip
    return ids.count(pos), ids.count(neg), ids.count(tokenizer.eos_token_id)


def test_control_tokens_are_trained_at_the_data_s_own_frequencies(tokenizer):
    pos, neg, examples = _token_counts(tokenizer)
    assert 3.7 < pos / neg < 4.3  # the data's own 80/20 (less the tail that fills no block)
    assert 2700 < examples <= 3000  # each example once


# --------------------------------------------------------------------------- latest versions


def test_training_keeps_exactly_the_rows_read_tagged_returns(tmp_path):
    texts = sentiment_sentences(12, seed=4)
    first = tagged_table(texts, run_id="20260101T000000-a")
    changed = tagged_table([t.upper() for t in texts[:3]], run_id="20260102T000000-b")
    changed = changed.set_column(
        changed.schema.get_field_index("doc_hash"), "doc_hash", pa.array(["v2"] * 3)
    )
    rewritten = tagged_table(texts[5:6], run_id="20260103T000000-c")  # same version, again
    rewritten = rewritten.set_column(0, "doc_id", pa.array(["doc-5"]))
    rewritten = rewritten.set_column(
        rewritten.schema.get_field_index("doc_hash"), "doc_hash", pa.array(["h5"])
    )
    pq.write_table(first, tmp_path / "part-0.parquet")
    pq.write_table(pa.concat_tables([changed, rewritten]), tmp_path / "part-1.parquet")

    parts = [pq.read_table(tmp_path / f"part-{i}.parquet") for i in range(2)]
    kept = latest_row_keys(pa.concat_tables(p.select(VERSION_COLUMNS) for p in parts))
    assert kept is not None and len(kept) == 12
    trained = pa.concat_tables(keep_rows(p, kept) for p in parts)
    expected = read_tagged(str(tmp_path))
    assert trained.column("text").to_pylist() == expected.column("text").to_pylist()
    upper = [t for t in trained.column("text").to_pylist() if t.isupper()]
    assert sorted(upper) == sorted(t.upper() for t in texts[:3])
    # A chunk written twice is trained once, from its highest (seq, run_id) row: doc-5's last.
    assert trained.num_rows == 12 and trained.column("text").to_pylist()[-1] == texts[5]
    # One version of everything: nothing to filter.
    assert latest_row_keys(first.select(VERSION_COLUMNS)) is None


def _two_conversions(tmp_path, texts):
    """Two outputs of one corpus, as the adherence benchmark makes them: the same doc ids,
    other doc hashes (other chunking), written by two runs; the second also supersedes doc-0."""
    sentiment = tagged_table(texts, run_id="20260101T000000-a")
    tags = tagged_table(texts, run_id="20260101T010000-b")
    tags = tags.set_column(
        tags.schema.get_field_index("doc_hash"), "doc_hash", pa.array([f"w{i}" for i in range(12)])
    )
    newer = tagged_table(["A new text for doc 0."], run_id="20260101T020000-c")
    newer = newer.set_column(newer.schema.get_field_index("doc_hash"), "doc_hash", pa.array(["n0"]))
    for name, table in (("sentiment", sentiment), ("tags", pa.concat_tables([tags, newer]))):
        (tmp_path / name).mkdir()
        pq.write_table(table, tmp_path / name / "part-0.parquet")
    return [pq.read_table(tmp_path / n / "part-0.parquet") for n in ("sentiment", "tags")]


def test_each_output_keeps_its_own_versions(tmp_path):
    texts = sentiment_sentences(12, seed=5)
    sentiment, tags = _two_conversions(tmp_path, texts)
    kept = latest_row_keys_by_output([t.select(VERSION_COLUMNS) for t in (sentiment, tags)])
    assert kept is not None
    trained = [keep_rows(t, kept).column("text").to_pylist() for t in (sentiment, tags)]
    # Every sentiment row stays (nothing supersedes it within its output); in the tag output the
    # newer version of doc-0 replaces the old one.
    assert trained[0] == texts
    assert sorted(trained[1]) == sorted([*texts[1:], "A new text for doc 0."])
    # Taken as one output, the later run's rows would win: the sentiment rows would be lost.
    one = latest_row_keys(pa.concat_tables(t.select(VERSION_COLUMNS) for t in (sentiment, tags)))
    assert keep_rows(sentiment, one).num_rows == 0
    assert latest_row_keys_by_output([sentiment.select(VERSION_COLUMNS)]) is None


@pytest.mark.usefixtures("ray_local")
def test_training_reads_every_output_of_data_paths(tmp_path, tiny_gpt2_dir):
    from condlabel.config import load_train_config
    from condlabel.train.loop import read_training_rows, training_outputs

    texts = sentiment_sentences(12, seed=6)
    _two_conversions(tmp_path, texts)
    cfg = load_train_config(
        overrides=[
            f"data.paths=[{tmp_path / 'sentiment'}, {tmp_path / 'tags'}]",
            f"model.path={tiny_gpt2_dir}",
        ]
    )
    outputs = training_outputs(cfg)
    assert [len(o) for o in outputs] == [1, 1]
    files = [f for o in outputs for f in o]
    rows = read_training_rows(files, cfg.storage, outputs=outputs).take_all()
    assert sorted(r["text"] for r in rows) == sorted([*texts, *texts[1:], "A new text for doc 0."])
    with_tokens = [r for r in rows if list(r["control_tokens"])]
    assert len(with_tokens) >= 12  # the VADER rows of the first output are all there


# --------------------------------------------------------------------------- one rendering


class _RecordingModel:
    """Stands in for a causal LM: records the prompts `generate` hands it."""

    def __init__(self):
        self.prompts: list[list[int]] = []

    def generate(self, input_ids, attention_mask, max_new_tokens, **_):
        import torch

        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
            self.prompts.append([i for i, m in zip(ids, mask, strict=True) if m])
        return torch.cat([input_ids, input_ids[:, -1:].repeat(1, max_new_tokens)], dim=1)


LABELS = {
    "control tokens only": dict(synopsis="", tags=[], control_tokens=[POS]),
    "tags only": dict(synopsis="", tags=["cats", "mats"], control_tokens=[]),
    "synopsis, tags and tokens": dict(
        synopsis="A cat sits.", tags=["cats", "mats"], control_tokens=[NEG, POS]
    ),
}


@pytest.mark.parametrize("mode", ["template", "control_tokens"])
@pytest.mark.parametrize(
    "kind, synopsis_dropped",
    [(kind, False) for kind in LABELS]
    + [("tags only", True), ("control tokens only", True)],  # rows whose synopsis was dropped
)
def test_eval_prompt_is_what_training_showed(tokenizer, mode, kind, synopsis_dropped):
    """Generation under a conditional starts from the very tokens training put before a text
    with those labels: EOS (the end of the example before), then the same prefix."""
    labels = LABELS[kind]
    row = {**labels, "text": "The day was lovely.", "parse_ok": True}
    data = TrainDataConfig(prefix=mode, untagged_fraction=0)
    if synopsis_dropped:
        row["synopsis"] = "The day in short."
        data = data.model_copy(update={"synopsis_drop_probability": 1.0})
    filler = {"text": "Before.", "synopsis": "", "tags": [], "control_tokens": [], "parse_ok": True}
    tokenized = tokenize_examples(tokenizer, build_examples([filler, row], data, random.Random(0)))
    length = sum(len(p) + len(t) + 1 for p, t in tokenized)
    [(stream, _)] = pack_examples(tokenized, length, tokenizer.eos_token_id)
    start = len(tokenized[0][0]) + len(tokenized[0][1])  # the EOS after the filler
    row_prefix = tokenized[1][0]

    cfg = build_config(EvalConfig, {"prefix": mode, "model": "unused"})
    cond = ConditionalConfig(
        synopsis=labels["synopsis"] or None,
        tags=labels["tags"],
        control_tokens=labels["control_tokens"],
    )
    model = _RecordingModel()
    settings = GenerationSettings(num_samples=1, max_new_tokens=2, do_sample=False)
    generate(model, tokenizer, conditional_prefix(cfg, cond), [""], settings, "cpu")
    assert model.prompts == [stream[start : start + 1 + len(row_prefix)]]
    assert stream[start] == tokenizer.eos_token_id
    if mode == "template" and kind == "tags only":
        assert "Synopsis:" in tokenizer.decode(row_prefix)  # the template, as training has it


# --------------------------------------------------------------------------- it learns


def _token_then_words(n: int, rng: random.Random) -> list[dict]:
    """Rows whose control token fully decides the polarity of the word right after it."""
    from lm_fixtures import NEGATIVE_WORDS, NOUNS, POSITIVE_WORDS

    rows = []
    for _ in range(n):
        positive = rng.random() < 0.5
        word = rng.choice(POSITIVE_WORDS if positive else NEGATIVE_WORDS)
        rows.append(
            {"text": f" {word} {rng.choice(NOUNS)}.", "control_tokens": [POS if positive else NEG]}
        )
    return rows


@pytest.mark.parametrize(
    "init, seed, learns",
    [("random", 0, True), ("random", 1, True), ("random", 2, True), ("mean", 0, False)],
)
def test_a_tiny_model_learns_to_follow_its_control_token(tiny_gpt2_dir, init, seed, learns):
    """150 steps with the product's pieces (load with the default row init, examples, packing,
    optimizer, the evaluation's prompt ids). A model that ignores the token scores the same
    under either token; this one must be far likelier to see the words its token promises.
    Measured on this tiny GPT-2: 4-5 nats apart with `random` rows (the default) at seeds 0-2,
    under 0.01 with `mean` rows (the issue's failure, kept here as the check that this test can
    fail) and with `words` rows (on a random base the words mean nothing)."""
    import torch

    cfg = build_config(
        TrainConfig,
        {
            "model": {
                "path": str(tiny_gpt2_dir),
                "control_tokens": [POS, NEG],
                "new_token_init": init,
            },
            "data": {"prefix": "control_tokens", "untagged_fraction": 0.0},
            "optimization": {
                "learning_rate": 3e-3,
                "max_steps": 150,
                "warmup_steps": 10,
                "seq_len": 32,
                "seed": seed,
            },
        },
    )
    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a few seconds on one core; more threads only contend
    try:
        right, wrong = _train_and_score(cfg, seed)
    finally:
        torch.set_num_threads(threads)
    assert (wrong - right > 1.0) if learns else (abs(wrong - right) < 0.3), (right, wrong)


def _train_and_score(cfg: TrainConfig, seed: int) -> tuple[float, float]:
    """(mean NLL of held-out texts under their own token, under the opposite token)."""
    import torch

    from condlabel.train.data import prompt_ids
    from condlabel.train.optim import make_optimizer

    loaded = load_for_training(cfg)
    model, tok = loaded.model, loaded.tokenizer
    optimizer, scheduler = make_optimizer(model, cfg.optimization)
    rng = random.Random(seed)
    model.train()
    for _ in range(cfg.optimization.max_steps):
        examples = build_examples(_token_then_words(64, rng), cfg.data, rng)
        blocks = pack_examples(tokenize_examples(tok, examples), 32, tok.eos_token_id)[:16]
        ids, labels = torch.tensor([b for b, _ in blocks]), torch.tensor([b for _, b in blocks])
        model(input_ids=ids, labels=labels).loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()

    def text_nll(token: str, text: str) -> float:
        """Summed negative log-likelihood of `text` generated under `token`."""
        start = len(prompt_ids(tok, token, ""))
        ids = torch.tensor([prompt_ids(tok, token, text)])
        labels = ids.clone()
        labels[0, :start] = -100
        with torch.no_grad():
            return model(input_ids=ids, labels=labels).loss.item() * (ids.shape[1] - start)

    model.eval()
    held_out = _token_then_words(100, random.Random(seed + 100))
    opposite = {POS: NEG, NEG: POS}
    right = sum(text_nll(r["control_tokens"][0], r["text"]) for r in held_out) / len(held_out)
    wrong = sum(text_nll(opposite[r["control_tokens"][0]], r["text"]) for r in held_out)
    return right, wrong / len(held_out)
