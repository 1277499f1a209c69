"""The Ray-free pieces of training: examples, untagged fraction, packing, masking, schedule,
control tokens and the checkpoint files (full and LoRA) on a tiny GPT-2."""

from __future__ import annotations

import random

import pytest

from condlabel.config import (
    FormatConfig,
    OptimizationConfig,
    TrainConfig,
    TrainDataConfig,
    build_config,
)
from condlabel.prefix import render_prefix
from condlabel.train.checkpoint import export_model, load_for_training, save_checkpoint
from condlabel.train.control_tokens import add_control_tokens
from condlabel.train.data import (
    IGNORE_INDEX,
    SequencePacker,
    build_examples,
    pack_examples,
    tokenize_examples,
    training_prefix,
)
from condlabel.train.optim import lr_multiplier, make_optimizer

ROW = {
    "text": "The cat sat on the mat.",
    "synopsis": "A cat sits.",
    "tags": ["cats", "mats", "sitting"],
    "control_tokens": ["<|pos|>", "<|nontoxic|>"],
    "parse_ok": True,
}


def test_prefix_is_the_conversion_template_or_control_tokens_only():
    rng = random.Random(0)
    cfg = TrainDataConfig(untagged_fraction=0.0)
    expected = render_prefix(
        FormatConfig(), "A cat sits.", ROW["tags"], ROW["control_tokens"], True
    )
    assert training_prefix(ROW, cfg, rng) == expected
    assert expected == "<|pos|><|nontoxic|>Synopsis: A cat sits. Tags: [cats, mats, sitting]\n"
    tokens_only = TrainDataConfig(untagged_fraction=0.0, prefix="control_tokens")
    assert training_prefix(ROW, tokens_only, rng) == "<|pos|><|nontoxic|>"
    assert training_prefix({**ROW, "parse_ok": False}, cfg, rng) == "<|pos|><|nontoxic|>"


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.5])
def test_untagged_fraction_is_honoured_on_a_seeded_sample(fraction):
    n = 20_000
    cfg = TrainDataConfig(untagged_fraction=fraction)
    examples = build_examples([ROW] * n, cfg, random.Random(7))
    untagged = sum(1 for prefix, _ in examples if prefix == "")
    sigma = (n * fraction * (1 - fraction)) ** 0.5
    assert abs(untagged - n * fraction) < 4 * sigma, (untagged, n * fraction)
    # The same seed draws the same rows.
    again = build_examples([ROW] * n, cfg, random.Random(7))
    assert [p for p, _ in again] == [p for p, _ in examples]
    assert all(text == ROW["text"] for _, text in examples)


def test_untagged_fraction_zero_and_one():
    assert all(
        p
        for p, _ in build_examples(
            [ROW] * 500, TrainDataConfig(untagged_fraction=0), random.Random(1)
        )
    )
    assert not any(
        p
        for p, _ in build_examples(
            [ROW] * 500, TrainDataConfig(untagged_fraction=1), random.Random(1)
        )
    )


def test_tag_shuffling_and_dropping():
    row = {**ROW, "tags": [f"t{i}" for i in range(8)]}
    shuffled = TrainDataConfig(
        untagged_fraction=0,
        shuffle_tags=True,
        prefix="template",
        format=FormatConfig(prefix_template="{tags}|"),
    )
    orders = {training_prefix(row, shuffled, random.Random(s)) for s in range(20)}
    assert len(orders) > 10
    assert all(sorted(o.rstrip("|").split(", ")) == sorted(row["tags"]) for o in orders)
    dropping = shuffled.model_copy(update={"shuffle_tags": False, "tag_drop_probability": 0.5})
    kept = [training_prefix(row, dropping, random.Random(s)).rstrip("|") for s in range(400)]
    counts = [len([t for t in k.split(", ") if t]) for k in kept]
    assert 3.4 < sum(counts) / len(counts) < 4.6  # 8 tags x 0.5
    assert all(k.split(", ") == sorted(k.split(", "), key=lambda t: int(t[1:])) for k in kept if k)


def test_control_token_dropping_trains_each_token_alone():
    row = {**ROW, "control_tokens": ["<|pos|>", "<|has-pos|>"]}
    cfg = TrainDataConfig(untagged_fraction=0, prefix="control_tokens")
    assert {training_prefix(row, cfg, random.Random(s)) for s in range(50)} == {
        "<|pos|><|has-pos|>"
    }
    dropping = cfg.model_copy(update={"control_token_drop_probability": 0.5})
    prefixes = [training_prefix(row, dropping, random.Random(s)) for s in range(800)]
    shares = {p: prefixes.count(p) / len(prefixes) for p in set(prefixes)}
    assert set(shares) == {"", "<|pos|>", "<|has-pos|>", "<|pos|><|has-pos|>"}  # order kept
    assert all(0.18 < share < 0.32 for share in shares.values()), shares  # 0.5 x 0.5 each


def test_packing_joins_with_eos_and_cuts_fixed_blocks():
    eos = 0
    tokenized = [([1, 2], [10, 11, 12]), ([3], [13]), ([], [14, 15, 16, 17])]
    blocks = pack_examples(tokenized, seq_len=4, eos_id=eos)
    stream = [1, 2, 10, 11, 12, 0, 3, 13, 0, 14, 15, 16, 17, 0]
    assert [ids for ids, _ in blocks] == [stream[0:4], stream[4:8], stream[8:12]]
    assert all(ids == labels for ids, labels in blocks)  # loss on all tokens
    packer = SequencePacker(4, eos)
    for prefix, text in tokenized:
        packer.add(prefix, text)
    assert packer.pending_tokens == len(stream) % 4


def test_prefix_masking_masks_exactly_the_prefix_tokens(tiny_gpt2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir)
    add_control_tokens(tok, model, ["<|pos|>", "<|nontoxic|>"])
    rows = [
        ROW,
        {**ROW, "text": "Dogs bark at night, loudly and often.", "tags": ["dogs"]},
        {**ROW, "text": "x" * 3, "control_tokens": []},
    ]
    examples = build_examples(rows, TrainDataConfig(untagged_fraction=0), random.Random(0))
    tokenized = tokenize_examples(tok, examples)
    seq_len = 16
    blocks = pack_examples(tokenized, seq_len=seq_len, eos_id=tok.eos_token_id, mask_prefix=True)
    ids = [i for block, _ in blocks for i in block]
    labels = [label for _, block in blocks for label in block]
    # Rebuild the expected mask independently: prefix positions masked, text and EOS kept.
    expected_mask = []
    for prefix, text in examples:
        n_prefix = len(tok(prefix, add_special_tokens=False)["input_ids"])
        n_text = len(tok(text, add_special_tokens=False)["input_ids"])
        expected_mask += [True] * n_prefix + [False] * (n_text + 1)
    expected_mask = expected_mask[: len(ids)]
    assert len(ids) == (len(expected_mask) // seq_len) * seq_len and len(ids) >= 2 * seq_len
    assert [label == IGNORE_INDEX for label in labels] == expected_mask
    assert all(label == i for i, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX)
    # The control tokens are single tokens and sit at the masked positions.
    pos = tok.convert_tokens_to_ids("<|pos|>")
    assert ids[0] == pos and labels[0] == IGNORE_INDEX
    unmasked = pack_examples(tokenized, seq_len=seq_len, eos_id=tok.eos_token_id)
    assert [b for b, _ in unmasked] == [b for b, _ in blocks]


def test_control_tokens_become_special_tokens_with_embeddings(tiny_gpt2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir)
    before = len(tok)
    ids = add_control_tokens(tok, model, ["<|pos|>", "<|neg|>", "<|pos|>"])
    assert len(tok) == before + 2 and ids[0] == ids[2] and min(ids) >= before
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert tok("<|pos|>great<|neg|>", add_special_tokens=False)["input_ids"][0] == ids[0]
    add_control_tokens(tok, model, ["<|pos|>"])  # idempotent
    assert len(tok) == before + 2


def test_learning_rate_schedule():
    cfg = OptimizationConfig(max_steps=110, warmup_steps=10, schedule="cosine")
    assert lr_multiplier(0, cfg) == pytest.approx(0.1)
    assert lr_multiplier(9, cfg) == pytest.approx(1.0)
    assert lr_multiplier(10, cfg) == pytest.approx(1.0)
    assert lr_multiplier(60, cfg) == pytest.approx(0.55)
    assert lr_multiplier(110, cfg) == pytest.approx(0.1)
    linear = cfg.model_copy(update={"schedule": "linear"})
    assert lr_multiplier(60, linear) == pytest.approx(0.55)
    assert lr_multiplier(35, linear) == pytest.approx(0.1 + 0.9 * 0.75)
    assert lr_multiplier(50, cfg.model_copy(update={"schedule": "constant"})) == 1.0


def _scheduled_lrs(scheduler, steps: int) -> list[float]:
    """The learning rate a scheduler gives at each of `steps` optimizer steps."""
    lrs = []
    for _ in range(steps):
        lrs.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
@pytest.mark.parametrize("warmup", [0, 1, 7])
def test_scheduler_follows_the_formula_step_by_step(schedule, warmup, monkeypatch):
    import math

    import torch
    from transformers.optimization import get_constant_schedule, get_wsd_schedule

    steps, floor = 50, 0.2
    monkeypatch.setattr("condlabel.train.optim.MIN_LR_RATIO", floor)  # not the default 0.1
    cfg = OptimizationConfig(
        learning_rate=1.0, max_steps=steps, warmup_steps=warmup, schedule=schedule
    )

    def formula(s: int) -> float:  # written out independently: warmup (s+1)/W, then decay
        if s < warmup:
            return (s + 1) / warmup
        progress = (s - warmup) / (steps - warmup)
        shape = {"cosine": 0.5 * (1 + math.cos(math.pi * progress)), "linear": 1 - progress}
        return 1.0 if schedule == "constant" else floor + (1 - floor) * shape[schedule]

    _, scheduler = make_optimizer(torch.nn.Linear(2, 2), cfg)
    ours = _scheduled_lrs(scheduler, steps)
    assert ours == pytest.approx([formula(s) for s in range(steps)], abs=1e-12)
    assert ours == pytest.approx([lr_multiplier(s, cfg) for s in range(steps)], abs=1e-12)
    # Past the warmup, transformers' schedules give the same rates (its own warmup starts at 0).
    sgd = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    theirs = (
        get_constant_schedule(sgd)
        if schedule == "constant"
        else get_wsd_schedule(
            sgd, 0, steps - warmup, num_stable_steps=0, decay_type=schedule, min_lr_ratio=floor
        )
    )
    assert _scheduled_lrs(theirs, steps - warmup) == pytest.approx(ours[warmup:], abs=1e-12)


def test_optimizer_state_by_position_still_restores():
    """A checkpoint written before the state went by parameter name resumes all the same."""
    import torch

    from condlabel.train.checkpoint import restore_training_state

    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    optimizer, scheduler = make_optimizer(model, OptimizationConfig(max_steps=10))
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    legacy = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    again, again_scheduler = make_optimizer(model, OptimizationConfig(max_steps=10))
    restore_training_state(model, again, again_scheduler, legacy)
    assert again_scheduler.last_epoch == 1
    restored = again.state_dict()["state"]
    assert all(
        torch.equal(restored[i]["exp_avg"], v["exp_avg"])
        for i, v in legacy["optimizer"]["state"].items()
    )


def _train_steps(loaded, steps=3):
    import torch

    from condlabel.train.checkpoint import training_state

    model, tok = loaded.model, loaded.tokenizer
    optimizer, scheduler = make_optimizer(
        model, OptimizationConfig(learning_rate=1e-2, max_steps=10)
    )
    ids = torch.tensor(
        [
            tok("<|pos|>Synopsis: good. Tags: [a]\nA very good day.", add_special_tokens=False)[
                "input_ids"
            ]
        ]
    )
    for _ in range(steps):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return ids, optimizer, training_state(model, optimizer, scheduler)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_checkpoint_round_trip_and_export(tiny_gpt2_dir, tmp_path, lora):
    import torch
    from transformers import AutoModelForCausalLM

    from condlabel.train.checkpoint import full_model_state, restore_training_state

    cfg = build_config(
        TrainConfig,
        {
            "model": {"path": str(tiny_gpt2_dir), "lora": {"enabled": lora, "r": 4}},
            "optimization": {"max_steps": 10},
        },
    )
    loaded = load_for_training(cfg)
    ids, optimizer, opt_state = _train_steps(loaded)
    loaded.model.eval()
    with torch.no_grad():
        want = loaded.model(input_ids=ids).logits
    full_state = full_model_state(loaded.model)
    ckpt = save_checkpoint(
        tmp_path / "ckpt", loaded.model, loaded.tokenizer, 3, 99, opt_state, full_state
    )
    names = {p.name for p in ckpt.iterdir()}
    assert ("adapter_model.safetensors" if lora else "model.safetensors") in names
    assert not any(n.endswith(".bin") for n in names)

    resumed = load_for_training(cfg, str(ckpt))
    assert (resumed.step, resumed.tokens_seen) == (3, 99)
    assert resumed.optimizer_state["scheduler"]["last_epoch"] == 3
    # The optimizer state (keyed by parameter name) comes back onto the resumed model's params.
    new_optimizer, new_scheduler = make_optimizer(resumed.model, OptimizationConfig(max_steps=10))
    restore_training_state(resumed.model, new_optimizer, new_scheduler, resumed.optimizer_state)
    assert new_scheduler.last_epoch == 3
    before, after = optimizer.state_dict()["state"], new_optimizer.state_dict()["state"]
    assert len(after) == len(before) > 0
    assert all(torch.equal(before[i]["exp_avg"], after[i]["exp_avg"]) for i in before)
    resumed.model.eval()
    with torch.no_grad():
        assert torch.allclose(resumed.model(input_ids=ids).logits, want, atol=1e-5)
    trainable = [n for n, p in resumed.model.named_parameters() if p.requires_grad]
    if lora:  # only the adapter and the new control-token rows learn
        assert trainable and all("lora_" in n or "token_adapter" in n for n in trainable)
        assert any("token_adapter" in n for n in trainable)

    export_model(tmp_path / "final", resumed.model, resumed.tokenizer)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "final", use_safetensors=True).eval()
    with torch.no_grad():
        assert torch.allclose(plain(input_ids=ids).logits, want, atol=1e-4)
    out = plain.generate(
        ids[:, :4], max_new_tokens=5, do_sample=False, pad_token_id=resumed.tokenizer.eos_token_id
    )
    assert out.shape == (1, 9)
