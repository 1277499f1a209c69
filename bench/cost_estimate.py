"""Estimated throughput and GPU-hours of the reference labeler (flan-ul2 + LoRA, bf16) per GPU.

No GPU was available when this was written, so these are *estimates* from a roofline model, not
measurements; docs/cluster.md prints the table and says so. Replace them with measured
chunks/s from a run's manifest once a GPU cluster is up (`condlabel status s3://.../`).

Model (UL2 20B, T5 v1.1 layout): 32 encoder + 32 decoder layers, d_model 4096, 16 heads x 256,
gated-GELU FFN 16384, vocabulary 32128, untied output layer. LoRA is merged, so it costs nothing.
Per chunk: ~2,000 words in (1.35 T5 tokens per English word -> 2,700 tokens), 80 tokens out.

* Encoder (prefill) is compute-bound: 2 FLOPs per parameter per input token plus the attention
  scores, at an assumed model FLOPs utilisation (MFU) of 45 %.
* Decoding is memory-bound: every step reads the decoder weights once for the whole batch plus
  each chunk's cross-attention keys/values, at an assumed 60 % of peak memory bandwidth.
* The log-prob comes from the generation logits (no second forward pass).

    python bench/cost_estimate.py
"""

from __future__ import annotations

D, HEADS_X_DKV, FF, LAYERS, VOCAB = 4096, 4096, 16384, 32, 32128
WORDS_IN, TOKENS_PER_WORD, TOKENS_OUT, BATCH = 2000, 1.35, 80, 16
MFU, BANDWIDTH_EFFICIENCY = 0.45, 0.60
GPUS = {  # bf16 dense peak FLOP/s, memory bandwidth bytes/s
    "A100 80GB SXM (p4de.24xlarge)": (312e12, 2.04e12),
    "H100 80GB SXM (p5.48xlarge)": (989e12, 3.35e12),
}

attn = 4 * D * HEADS_X_DKV  # Q, K, V, O projections
ffn = 3 * D * FF  # gated GELU: wi_0, wi_1, wo
enc_params = LAYERS * (attn + ffn)
dec_params = LAYERS * (2 * attn + ffn)
tokens_in = WORDS_IN * TOKENS_PER_WORD


def per_chunk_seconds(peak_flops: float, bandwidth: float) -> tuple[float, float]:
    encoder = 2 * enc_params * tokens_in + LAYERS * 4 * tokens_in**2 * HEADS_X_DKV
    cross_kv = LAYERS * 2 * 2 * D * HEADS_X_DKV * tokens_in  # cross-attention K/V, once per chunk
    prefill_s = (encoder + cross_kv) / (peak_flops * MFU)
    # One decode step for the whole batch: decoder weights once + each chunk's cross K/V cache.
    weight_bytes = 2 * (dec_params + VOCAB * D)
    cross_cache_bytes = LAYERS * 2 * HEADS_X_DKV * 2 * tokens_in
    step_s = (weight_bytes + BATCH * cross_cache_bytes) / (bandwidth * BANDWIDTH_EFFICIENCY)
    decode_s = TOKENS_OUT * step_s / BATCH
    return prefill_s, decode_s


def main() -> None:
    print(
        f"encoder {enc_params / 1e9:.1f}B + decoder {dec_params / 1e9:.1f}B parameters; "
        f"{tokens_in:.0f} tokens in, {TOKENS_OUT} out, batch {BATCH}"
    )
    print(
        "| GPU | prefill s/chunk | decode s/chunk | chunks/s per GPU | GPU-hours per 1B input tokens "
        "| GPU-hours per 1B words |"
    )
    print("|---|---|---|---|---|---|")
    for name, (flops, bandwidth) in GPUS.items():
        prefill, decode = per_chunk_seconds(flops, bandwidth)
        rate = 1 / (prefill + decode)
        per_b_tokens = 1e9 / tokens_in / rate / 3600
        per_b_words = 1e9 / WORDS_IN / rate / 3600
        print(
            f"| {name} | {prefill:.3f} | {decode:.3f} | {rate:.2f} | {per_b_tokens:.0f} "
            f"| {per_b_words:.0f} |"
        )


if __name__ == "__main__":
    main()
