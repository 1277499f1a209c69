"""`optimization.packing: documents`: inside a packed block every example sees only itself, from
position 0, exactly as a generation under its conditional sees it (on a GPT-2 and a Llama, whose
position encodings differ: learned absolute vs rotary)."""

from __future__ import annotations

import pytest

from condlabel.config import OptimizationConfig
from condlabel.train.data import document_positions, pack_examples

EOS = 0


def test_positions_restart_at_every_eos_and_at_the_block_start():
    #            continued  | next example          | next
    block = [7, 8, EOS, 5, 6, 9, EOS, 4]
    assert document_positions(block, EOS) == [0, 1, 0, 1, 2, 3, 0, 1]
    assert document_positions([], EOS) == []


def test_documents_is_the_default_and_concat_is_allowed():
    assert OptimizationConfig().packing == "documents"
    assert OptimizationConfig(packing="concat").packing == "concat"
    with pytest.raises(ValueError, match="packing"):
        OptimizationConfig(packing="padded")


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(
        GPT2Config(vocab_size=50, n_positions=64, n_embd=32, n_layer=2, n_head=2)
    )


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config)


@pytest.mark.parametrize("build", [_gpt2, _llama], ids=["gpt2", "llama"])
def test_an_example_packed_after_another_gets_the_logits_it_gets_alone(build):
    import torch

    torch.manual_seed(0)
    model = build().eval()
    # Two examples, `prefix text EOS`, packed as training packs them; the second starts at the
    # EOS that ends the first, as a generation starts from `EOS prefix`.
    first, second = ([3], [11, 12, 13, 14, 15]), ([4], [21, 22, 23])
    [(block, _)] = pack_examples([first, second], seq_len=11, eos_id=EOS)
    start = block.index(EOS)
    alone = [EOS, *second[0], *second[1], EOS]
    assert block[start:] == alone[: len(block) - start]

    ids = torch.tensor([block])
    with torch.no_grad():
        solo = model(input_ids=torch.tensor([alone[: len(block) - start]])).logits[0]
        packed = model(
            input_ids=ids,
            position_ids=torch.tensor([document_positions(block, EOS)]),
            use_cache=False,
        ).logits[0, start:]
        concat = model(input_ids=ids).logits[0, start:]
    torch.testing.assert_close(packed, solo, atol=1e-5, rtol=1e-4)
    # Plain packing lets the second example read the first: its logits are not its own.
    assert (concat - solo).abs().max() > 1e-3
