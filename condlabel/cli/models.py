"""Commands about models and configs: merge, config, train, eval."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from typing import get_args

from condlabel.cli.common import (
    Commands,
    Parser,
    json_flag,
    print_summary,
    run_config_flags,
)
from condlabel.config import (
    ConfigError,
    ConvertConfig,
    EvalConfig,
    TrainConfig,
    keys_help,
    load_config,
    load_eval_config,
    load_storage_config,
    load_train_config,
)
from condlabel.failures import (
    EXIT_OK,
)
from condlabel.preflight import preflight

log = logging.getLogger("condlabel")


def merge_flags(p: Parser) -> None:
    from condlabel.config.labelers import CT2ComputeType

    p.add_argument("--base", required=True, metavar="MODEL", help="base model")
    p.add_argument(
        "--adapter",
        metavar="ADAPTER",
        help="peft LoRA adapter (safetensors, or a peft adapter_model.bin of plain tensors); "
        "required for --format hf, optional for ct2 (a plain conversion)",
    )
    p.add_argument(
        "--output",
        required=True,
        metavar="URI",
        help="where to write the merge: a new or empty folder or prefix",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into an --output that holds files: files of the same name (a previous "
        "merge's) are replaced, files condlabel did not write there are kept",
    )
    p.add_argument("--revision", help="hub revision of --base")
    p.add_argument("--adapter-revision", help="hub revision of --adapter")
    p.add_argument(
        "--format",
        choices=["hf", "ct2"],
        default="hf",
        help="hf: transformers safetensors (labeler.hf); ct2: a CTranslate2 model "
        "(labeler.ct2, T5-family labelers)",
    )
    p.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        default="auto",
        help="--format hf: dtype of the saved weights (auto: the base's)",
    )
    p.add_argument(
        "--quantization",
        choices=get_args(CT2ComputeType),
        help="--format ct2: weight type of the CTranslate2 model (default int8); load it with "
        "the same labeler.ct2.compute_type",
    )
    run_config_flags(p, storage_only=True)


def _merge_problems(args: argparse.Namespace) -> list[str]:
    problems = []
    if args.format == "hf" and not args.adapter:
        problems.append("--adapter: required for --format hf (nothing to merge)")
    if args.format == "hf" and args.quantization:
        problems.append("--quantization: only with --format ct2 (hf takes --dtype)")
    if args.format == "ct2" and args.dtype != "auto":
        problems.append("--dtype: only with --format hf (ct2 takes --quantization)")
    return problems


def cmd_merge(args: argparse.Namespace) -> int:
    """Merge a LoRA adapter into its base model and write it (safetensors or CTranslate2).

    Load --base and --adapter (local directory, s3:// prefix or hub id; safetensors, or a peft
    adapter_model.bin read with torch's restricted unpickler: tensors only), merge the adapter
    into the weights (float32 on the CPU, so the merge is exact) and write the merged model and
    tokenizer to --output (local directory or s3:// prefix). With --format hf, point
    labeler.model at the result and leave labeler.hf.adapter unset: a cluster merges once and
    every actor loads merged weights. With --format ct2 (T5-family models; --adapter optional),
    the merged model is converted to CTranslate2 with --quantization weights: point
    labeler.model at it, with labeler.ct2.compute_type set to the same type.
    """
    from condlabel.models import merge_model
    from condlabel.preflight import CT2, HF_LABELER, Weights, check

    problems = _merge_problems(args)
    if problems:
        raise ConfigError(problems)
    storage = load_storage_config(args.config, args.overrides)
    weights = [Weights("--base", args.base), Weights("--adapter", args.adapter, adapter=True)]
    extras = [("merge", HF_LABELER)] + ([("--format", CT2)] if args.format == "ct2" else [])
    check(extras, weights, storage)
    quantization = args.quantization or "int8"
    uri = merge_model(
        args.base,
        args.adapter,
        args.output,
        revision=args.revision,
        adapter_revision=args.adapter_revision,
        dtype=args.dtype,
        storage=storage,
        format=args.format,
        quantization=quantization,
        overwrite=args.overwrite,
    )
    backend = args.format
    use = f"--set labeler.backend={backend} --set labeler.{backend}.model={uri}"
    if backend == "ct2":
        use += f" --set labeler.ct2.compute_type={quantization}"
    print(f"merged model written to {uri}\nuse it with: {use}")
    return EXIT_OK


def config_flags(p: Parser) -> None:
    p.epilog = keys_help(ConvertConfig)
    p.add_argument(
        "--kind",
        default="convert",
        help="which configuration: convert (default), or another registered kind "
        "such as train or eval",
    )
    run_config_flags(p)


def cmd_config(args: argparse.Namespace) -> int:
    """Validate and print a resolved configuration (defaults + file + --set).

    Secrets are redacted. The keys below are those of a conversion; `condlabel train --help`
    and `condlabel eval --help` list theirs.
    """
    import yaml

    cfg = load_config(args.kind, args.config, args.overrides)
    data = cfg.redacted() if hasattr(cfg, "redacted") else cfg.model_dump(mode="json")
    print(yaml.safe_dump(data, sort_keys=False), end="")
    return EXIT_OK


def train_flags(p: Parser) -> None:
    p.epilog = keys_help(TrainConfig)
    run_config_flags(p)
    p.add_argument(
        "--dry-run", action="store_true", help="check the inputs and print the plan; train nothing"
    )
    json_flag(p)


def cmd_train(args: argparse.Namespace) -> int:
    """Finetune a causal LM on tagged shards (Ray Train).

    Stream the tagged parquet under data.paths (local or s3://) through Ray Data to a Ray Train
    worker group that finetunes model.path (full or LoRA, DDP or FSDP) on prefix + text.
    Checkpoints (Hugging Face format) go to checkpoint.storage_path every
    checkpoint.every_steps; rerunning with the same checkpoint.name resumes from the latest. The
    final model is exported to checkpoint.export_uri.
    """
    from condlabel.train.loop import plan_lines, plan_training, run_training

    cfg = load_train_config(args.config, args.overrides)
    log.debug("config: %s", json.dumps(cfg.redacted(), sort_keys=True))  # whole: -v, manifest
    preflight(cfg)
    if args.dry_run:
        print("\n".join(plan_lines(cfg, plan_training(cfg))))
        return EXIT_OK
    print_summary(run_training(cfg), args.json)
    return EXIT_OK


def eval_flags(p: Parser) -> None:
    p.epilog = keys_help(EvalConfig)
    run_config_flags(p)
    json_flag(p, "print the report as JSON")


def cmd_eval(args: argparse.Namespace) -> int:
    """Measure how well a trained model honours its conditionals.

    Generate continuations under each configured conditional (control tokens, tags, synopsis)
    and unconditioned, relabel them with the configured classifiers or labeler, and print per
    conditional the misalignment score (share of generations whose labels contradict the
    conditional) next to the unconditioned baseline.
    """
    from condlabel.train.evaluate import run_evaluation

    cfg = load_eval_config(args.config, args.overrides)
    log.debug("config: %s", json.dumps(cfg.redacted(), sort_keys=True))  # whole: -v, manifest
    preflight(cfg)
    report = run_evaluation(cfg)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        print(f"model {report.model}; judges: {', '.join(report.judges)}")
        print(report.table())
        if cfg.output:
            print(f"report: {cfg.output}")
    return EXIT_OK


Handler = Callable[[argparse.Namespace], int]


COMMANDS: Commands = {
    "merge": (merge_flags, cmd_merge),
    "config": (config_flags, cmd_config),
    "train": (train_flags, cmd_train),
    "eval": (eval_flags, cmd_eval),
}
