"""`generation.guidance_scale` in `condlabel eval`: classifier-free guidance against the same
prompt without the conditional's prefix, checked token by token against the formula."""

from __future__ import annotations

import pytest

from condlabel.config import GenerationSettings
from condlabel.train.data import prompt_ids
from condlabel.train.evaluate import generate


def _guided_greedy(model, tok, prefix: str, prompt: str, scale: float, steps: int) -> list[int]:
    """Greedy decoding by hand: argmax of scale * log p(.|EOS prefix prompt ...) +
    (1 - scale) * log p(.|EOS prompt ...)."""
    import torch

    cond, plain, out = prompt_ids(tok, prefix, prompt), prompt_ids(tok, "", prompt), []
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
