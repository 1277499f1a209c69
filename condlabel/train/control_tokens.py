"""Control tokens in the model under training: added to the tokenizer, their embedding rows
grown and initialised so the model can tell them apart from the first step.

Why the initialisation matters: transformers' `resize_token_embeddings` starts every new row
at the vocabulary's mean (plus noise of 1e-9 x its covariance), so `<|pos|>` and `<|neg|>` begin
as the same vector. The gradient that separates them comes only from the few positions where
each appears, while (with tied input/output embeddings) both rows get the same large output-side
update at every position: in a 1,500-step run the two rows ended 0.04 apart at a norm of 0.92
and the loss under either token was the same (issue 13). Distinct rows from the start remove
that handicap; rows from descriptive words also carry what a pretrained model knows of them.
"""

from __future__ import annotations

from collections.abc import Sequence

from condlabel.config import TrainModelConfig


def add_control_tokens(tokenizer, model, tokens: Sequence[str]) -> list[int]:
    """Add missing control tokens as special tokens (never split by BPE) and grow the embeddings.

    New rows start at the mean of the existing embeddings (transformers' default); call
    `init_new_token_rows` to give them distinct starts. Returns the ids of every control token.
    """
    missing = [t for t in dict.fromkeys(tokens) if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    return tokenizer.convert_tokens_to_ids(list(tokens))


def new_token_ids(tokenizer, vocab_before: int, tokens: Sequence[str]) -> list[int]:
    """Ids of the control tokens added after the tokenizer had `vocab_before` tokens."""
    return [i for i in tokenizer.convert_tokens_to_ids(list(tokens)) if i >= vocab_before]


def init_new_token_rows(
    model, tokenizer, vocab_before: int, cfg: TrainModelConfig, seed: int = 0
) -> dict[str, str]:
    """Initialise the input-embedding rows of the control tokens added after the tokenizer had
    `vocab_before` tokens, as `cfg.new_token_init` says; returns {token: how its row was set}.

    Only the input rows are set: with tied embeddings the output rows follow; an untied output
    head keeps transformers' mean rows, so the first steps see no large logits for the tokens.
    """
    import torch

    if cfg.new_token_init == "mean":
        return {}
    weight = model.get_input_embeddings().weight
    old = weight[:vocab_before].detach().float()
    mean, std = old.mean(dim=0), old.std(dim=0)
    generator = torch.Generator().manual_seed(seed)
    how: dict[str, str] = {}
    with torch.no_grad():
        for token in dict.fromkeys(cfg.control_tokens):
            row = tokenizer.convert_tokens_to_ids(token)
            if row < vocab_before:
                continue  # the base model already knows this token
            word_ids = _word_ids(tokenizer, cfg.new_token_words.get(token, ""), vocab_before)
            if cfg.new_token_init == "words" and word_ids:
                value = old[word_ids].mean(dim=0)
                how[token] = f"mean of {len(word_ids)} word token(s)"
            else:
                value = mean + std * torch.randn(mean.shape, generator=generator)
                how[token] = "random"
            weight[row] = value.to(weight.dtype)
    return how


def _word_ids(tokenizer, words: str, vocab_before: int) -> list[int]:
    """Token ids of each word as it appears inside text (after a space), deduplicated."""
    ids: list[int] = []
    for word in words.split():
        ids.extend(tokenizer(" " + word, add_special_tokens=False)["input_ids"])
    return [i for i in dict.fromkeys(ids) if i < vocab_before]
