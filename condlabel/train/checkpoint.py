"""The model under training: load (from the base model or a checkpoint to resume), checkpoint
and export, as Hugging Face directories (safetensors) that `from_pretrained` reads.

A full finetune's checkpoint is a complete model; a LoRA checkpoint is an adapter on the
configured base (with the control-token embedding rows it trained). Beside the weights, a
checkpoint holds `trainer_state.json` (step, tokens seen) and `optimizer.pt` (optimizer and
schedule). State dicts go through `torch.distributed.checkpoint.state_dict`, one path for a
plain module, DDP and FSDP: every rank takes part (FSDP gathers its shards), rank 0 gets the
full state on the CPU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from condlabel.config import TrainConfig
from condlabel.train.control_tokens import add_control_tokens, init_new_token_rows, new_token_ids

TRAINER_STATE = "trainer_state.json"
OPTIMIZER_STATE = "optimizer.pt"
# Fixed, not a setting: the dropout on a LoRA adapter's input (train and distill), peft's
# customary value; nothing here was measured to need another.
LORA_DROPOUT = 0.05


@dataclass
class TrainingState:
    """A model ready to train and where its training stands (all zero/None on a fresh start).

    Not `condlabel.models.LoadedModel` (an inference model on its device): this one carries the
    step, the tokens seen and the optimizer state a resumed run continues from.
    """

    model: Any
    tokenizer: Any
    step: int = 0
    tokens_seen: int = 0
    optimizer_state: dict[str, Any] | None = None


def load_for_training(cfg: TrainConfig, checkpoint_dir: str | None = None) -> TrainingState:
    """The model to train: from the latest checkpoint when resuming, else from `model.path`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from condlabel.models import fetch_model

    if not cfg.model.path:
        raise ValueError("model.path: set the causal LM to finetune (local dir, s3:// or hub id)")
    lora = cfg.model.lora.enabled
    base_path = fetch_model(cfg.model.path, cfg.storage)
    source = checkpoint_dir if (checkpoint_dir and not lora) else base_path
    tokenizer = AutoTokenizer.from_pretrained(
        checkpoint_dir or base_path, revision=cfg.model.revision
    )
    model: Any = AutoModelForCausalLM.from_pretrained(
        source, revision=cfg.model.revision, use_safetensors=True, dtype=torch.float32
    )
    # New means new to the tokenizer: a model whose embedding matrix is padded past the
    # tokenizer gets no new rows, yet the rows its added tokens take were never trained.
    # Resuming, the checkpoint's tokenizer already has them (the LoRA adapter restores them).
    vocab_before = len(tokenizer)
    add_control_tokens(tokenizer, model, cfg.model.control_tokens)
    init_new_token_rows(model, tokenizer, vocab_before, cfg.model, cfg.optimization.seed)
    if lora:
        added = new_token_ids(tokenizer, vocab_before, cfg.model.control_tokens)
        model = _with_lora(model, cfg, added, checkpoint_dir)
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        if lora:
            model.enable_input_require_grads()
    return resumed_state(model, tokenizer, checkpoint_dir)


def resumed_state(model: Any, tokenizer: Any, checkpoint_dir: str | None) -> TrainingState:
    """The model and tokenizer, with the step, token count and optimizer state of
    `checkpoint_dir` (a Ray Train checkpoint of this run) when there is one."""
    import torch

    state = TrainingState(model, tokenizer)
    if checkpoint_dir:
        trainer = json.loads(Path(checkpoint_dir, TRAINER_STATE).read_text())
        state.step, state.tokens_seen = int(trainer["step"]), int(trainer["tokens_seen"])
        opt_path = Path(checkpoint_dir, OPTIMIZER_STATE)
        if opt_path.exists():
            state.optimizer_state = torch.load(opt_path, map_location="cpu", weights_only=True)
    return state


def _with_lora(model, cfg: TrainConfig, added: list[int], checkpoint_dir: str | None):
    """The base wrapped in a trainable LoRA adapter: the checkpoint's, or a new one."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if checkpoint_dir:
        return PeftModel.from_pretrained(model, checkpoint_dir, is_trainable=True)
    lcfg = cfg.model.lora
    return get_peft_model(
        model,
        LoraConfig(
            task_type="CAUSAL_LM",
            r=lcfg.r,
            lora_alpha=lcfg.alpha,
            lora_dropout=LORA_DROPOUT,
            target_modules=lcfg.target_modules,
            # The new control-token rows must learn, or every conditional looks the same.
            trainable_token_indices=added or None,
        ),
    )


# --------------------------------------------------------------------------- state dicts


def _full_on_rank0():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # cpu_offload with full_state_dict: only rank 0 holds the gathered copy (others get {}).
    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_model_state(model) -> dict[str, Any]:
    """The whole model's state dict on rank 0 (wrapper prefixes removed); call on every rank."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_full_on_rank0())


def training_state(model, optimizer, scheduler) -> dict[str, Any]:
    """Optimizer (keyed by parameter name, full) and schedule state; call on every rank."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return {
        "optimizer": get_optimizer_state_dict(model, optimizer, options=_full_on_rank0()),
        "scheduler": scheduler.state_dict(),
    }


def restore_training_state(model, optimizer, scheduler, state: dict[str, Any]) -> None:
    """Load what `training_state` saved (every rank reads the full state; FSDP keeps its shard).

    Checkpoints written before the state went by parameter name hold `optimizer.state_dict()`
    (parameters by position, DDP only): those load as they are, so such runs still resume.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    saved = state["optimizer"]
    ids = [i for group in saved["param_groups"] for i in group["params"]]
    if ids and isinstance(ids[0], int):
        optimizer.load_state_dict(saved)
    else:
        options = StateDictOptions(full_state_dict=True)
        set_optimizer_state_dict(model, optimizer, saved, options=options)
    scheduler.load_state_dict(state["scheduler"])


def unwrap(model):
    """The model inside a DDP/FSDP wrapper."""
    return getattr(model, "module", model)


# --------------------------------------------------------------------------- files


def save_checkpoint(
    directory: str | Path,
    model,
    tokenizer,
    step: int,
    tokens_seen: int,
    optimizer_state: dict[str, Any] | None,
    full_state: dict[str, Any] | None = None,
) -> Path:
    """A Hugging Face checkpoint (safetensors) plus the trainer state needed to resume.

    `full_state` (from `full_model_state`) is saved in place of the module's own state dict.
    """
    import torch

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    unwrap(model).save_pretrained(directory, state_dict=full_state, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    if optimizer_state is not None:
        torch.save(optimizer_state, directory / OPTIMIZER_STATE)
    (directory / TRAINER_STATE).write_text(json.dumps({"step": step, "tokens_seen": tokens_seen}))
    return directory


def export_model(
    directory: str | Path, model, tokenizer, full_state: dict[str, Any] | None = None
) -> Path:
    """The final model as a plain HF checkpoint `from_pretrained` loads (LoRA merged in).

    A LoRA model is merged from the module itself: LoRA trains under DDP only (the config
    refuses FSDP with LoRA), so rank 0 holds every weight, and the merged model's names are
    not those of `full_state`.
    """
    directory = Path(directory)
    module = unwrap(model)
    if hasattr(module, "merge_and_unload"):
        module.merge_and_unload().save_pretrained(directory, safe_serialization=True)
    else:
        module.save_pretrained(directory, state_dict=full_state, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory
