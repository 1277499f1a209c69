"""`generation.guidance_scale` in `condlabel eval`: classifier-free guidance against the same
prompt without the conditional's prefix (or, with `guidance_against: opposite`, under the
opposite control tokens), checked token by token against the formula."""

from __future__ import annotations

import pytest

from condlabel.config import EvalConfig, GenerationSettings
from condlabel.config.eval import ConditionalConfig
from condlabel.train.data import prompt_ids
from condlabel.train.evaluate import conditional_prefix, generate, guidance_prefix


def _guided_greedy(
    model, tok, prefix: str, prompt: str, scale: float, steps: int, against: str = ""
) -> list[int]:
    """Greedy decoding by hand: argmax of scale * log p(.|EOS prefix prompt ...) +
    (1 - scale) * log p(.|EOS against prompt ...)."""
    import torch

    cond, plain, out = prompt_ids(tok, prefix, prompt), prompt_ids(tok, against, prompt), []
    with torch.no_grad():
        for _ in range(steps):
            lc = model(torch.tensor([cond + out])).logits[0, -1].log_softmax(-1)
            lu = model(torch.tensor([plain + out])).logits[0, -1].log_softmax(-1)
            out.append(int((scale * lc + (1 - scale) * lu).argmax()))
    return out


@pytest.mark.parametrize("prompt", ["", " The"])
def test_guided_generation_is_the_guidance_formula(tiny_gpt2_dir, prompt):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir).eval()
    prefix, steps = " lovely day.", 6
    settings = GenerationSettings(
        do_sample=False, max_new_tokens=steps, num_samples=2, batch_size=2, guidance_scale=3.0
    )
    [(_, guided), _] = generate(model, tok, prefix, [prompt], settings, "cpu")
    expected = _guided_greedy(model, tok, prefix, prompt, 3.0, steps)
    assert guided == tok.decode(expected, skip_special_tokens=True)
    # Guidance changes what is generated (or this test could not tell it was applied).
    plain = settings.model_copy(update={"guidance_scale": 1.0})
    [(_, unguided), _] = generate(model, tok, prefix, [prompt], plain, "cpu")
    assert unguided == tok.decode(
        _guided_greedy(model, tok, prefix, prompt, 1.0, steps), skip_special_tokens=True
    )
    assert guided != unguided


def test_guidance_below_one_is_refused():
    with pytest.raises(ValueError, match="guidance_scale"):
        GenerationSettings(guidance_scale=0.5)


def test_guidance_against_the_opposite_prefix_is_the_formula(tiny_gpt2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir).eval()
    prefix, against, steps = " lovely day.", " awful day.", 6
    settings = GenerationSettings(
        do_sample=False, max_new_tokens=steps, num_samples=1, batch_size=1, guidance_scale=3.0
    )
    [(_, guided)] = generate(model, tok, prefix, [""], settings, "cpu", against=against)
    expected = _guided_greedy(model, tok, prefix, "", 3.0, steps, against=against)
    assert guided == tok.decode(expected, skip_special_tokens=True)
    [(_, unconditioned)] = generate(model, tok, prefix, [""], settings, "cpu")
    assert guided != unconditioned  # the branch pushed away from made a difference


def test_guidance_prefix_swaps_control_tokens_for_their_opposites():
    def cfg(against: str) -> EvalConfig:
        return EvalConfig(
            model="m",
            prefix="control_tokens",
            conditionals=[{"control_tokens": ["<|pos|>"]}],
            classifiers=[{"backend": "vader"}],
            generation={"guidance_scale": 2.0, "guidance_against": against},
        )

    opposite, plain = cfg("opposite"), cfg("unconditioned")
    pos = ConditionalConfig(control_tokens=["<|pos|>"])
    assert guidance_prefix(opposite, pos) == "<|neg|>"
    assert guidance_prefix(plain, pos) == ""
    # Tokens without an opposite stay; a conditional with none that has one is unconditioned.
    both = ConditionalConfig(control_tokens=["<|nontoxic|>", "<|x|>"])
    assert guidance_prefix(opposite, both) == "<|toxic|><|x|>"
    assert guidance_prefix(opposite, ConditionalConfig(control_tokens=["<|x|>"])) == ""
    tags = ConditionalConfig(tags=["python"])
    assert guidance_prefix(opposite, tags) == ""
    assert conditional_prefix(opposite, pos) == "<|pos|>"
