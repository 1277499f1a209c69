"""The student under training: loaded from its base (or this run's latest checkpoint, to
resume), seq2seq or causal, full finetune or LoRA. Checkpoints and the export are the ones of
`condlabel.train.checkpoint` (Hugging Face directories, LoRA merged at export). No Ray here."""

from __future__ import annotations

import json
from typing import Any

from condlabel.config import DistillConfig, HFLabelerConfig
from condlabel.train.checkpoint import LORA_DROPOUT, TrainingState, resumed_state

# Fixed, not a setting: chunks per student `label` call in the gate; it sets only the gate's
# speed and memory, not its verdict (scores are batch-invariant).
GATE_BATCH_SIZE = 16


def load_student(
    cfg: DistillConfig, checkpoint_dir: str | None = None
) -> tuple[TrainingState, bool]:
    """(the model ready to train and where its training stands, whether it is seq2seq)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    from condlabel.models import fetch_model

    student = cfg.student
    if not student.model:
        raise ValueError("student.model: set the model to distill into (local, s3:// or hub id)")
    base = fetch_model(student.model, cfg.storage)
    # The model config says which kind it is, as the labeler reads it when the student labels.
    config = AutoConfig.from_pretrained(base, revision=student.revision)
    seq2seq = bool(getattr(config, "is_encoder_decoder", False))
    lora = student.lora.enabled
    # A full finetune resumes from the checkpoint's weights; LoRA from the base plus the
    # checkpoint's adapter.
    source = checkpoint_dir if (checkpoint_dir and not lora) else base
    tokenizer = AutoTokenizer.from_pretrained(checkpoint_dir or base, revision=student.revision)
    model_class = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    model: Any = model_class.from_pretrained(
        source, revision=student.revision, use_safetensors=True, dtype=torch.float32
    )
    if lora:
        model = _with_lora(model, cfg, seq2seq, checkpoint_dir)
    return resumed_state(model, tokenizer, checkpoint_dir), seq2seq


def _with_lora(model, cfg: DistillConfig, seq2seq: bool, checkpoint_dir: str | None):
    from peft import LoraConfig, PeftModel, get_peft_model

    if checkpoint_dir:
        return PeftModel.from_pretrained(model, checkpoint_dir, is_trainable=True)
    lcfg = cfg.student.lora
    return get_peft_model(
        model,
        LoraConfig(
            task_type="SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM",
            r=lcfg.r,
            lora_alpha=lcfg.alpha,
            lora_dropout=LORA_DROPOUT,
            target_modules=lcfg.target_modules,
        ),
    )


def student_labeler_config(cfg: DistillConfig, model_uri: str, **overrides: Any) -> HFLabelerConfig:
    """The `hf` labeler settings of the trained student: its prompt and limits as trained, the
    gate's decoding (greedy, so the gate's verdict is deterministic)."""
    settings: dict[str, Any] = {
        "model": model_uri,
        "prompt_template": cfg.student.prompt_template,
        "max_input_tokens": cfg.student.max_input_tokens,
        "max_new_tokens": cfg.student.max_new_tokens,
        "do_sample": False,
        "max_batch_size": GATE_BATCH_SIZE,
    }
    return HFLabelerConfig(**(settings | overrides))


def labeler_overrides(labeler: HFLabelerConfig) -> list[str]:
    """The `--set` flags that make `condlabel convert` label with the student as the gate did."""
    flags = ["labeler.backend=hf", f"labeler.model={labeler.model}"]
    defaults = HFLabelerConfig()
    for key, section in (
        ("prompt_template", "hf"),
        ("max_input_tokens", "hf"),
        ("max_new_tokens", "generation"),
        ("do_sample", "generation"),
    ):
        value = getattr(labeler, key)
        if value != getattr(defaults, key):
            shown = json.dumps(value) if isinstance(value, str) else str(value).lower()
            flags.append(f"labeler.{section}.{key}={shown}")
    return flags
