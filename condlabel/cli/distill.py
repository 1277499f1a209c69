"""The distill command: train a student labeler on a teacher's tagged output, gate, export."""

from __future__ import annotations

import argparse
import json
import logging

from condlabel.cli.common import Commands, Parser, json_flag, run_config_flags
from condlabel.config import DistillConfig, keys_help, load_config
from condlabel.failures import EXIT_FAILED, EXIT_OK
from condlabel.preflight import TRAIN, Extra, Weights, check

DISTILL = Extra(("rouge_score",), "pip install 'condlabel[distill]'")

log = logging.getLogger("condlabel")


def distill_flags(p: Parser) -> None:
    p.epilog = keys_help(DistillConfig)
    run_config_flags(p)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the config and the teacher's data, print the split; train nothing",
    )
    json_flag(p, "print the summary and the gate's report as JSON")


def cmd_distill(args: argparse.Namespace) -> int:
    """Train a student labeler on a teacher's tagged output, gate it, export it.

    Read the teacher's rows under data.paths (latest versions, parse_ok only), hold out
    holdout_fraction of the documents, and finetune student.model (seq2seq or causal, full or
    LoRA) on Ray Train to write the teacher's `Synopsis: ... Tags: [...]` for each chunk, the
    chunk rendered as the labeler renders it. Checkpoints go to checkpoint.storage_path; a
    rerun with the same checkpoint.name resumes. The student then labels the held-out chunks
    and is compared with the teacher (parse rate, tag precision/recall/F1, ROUGE-L,
    calibration of mean_logprob); the report goes to <output>/distill_report.json. Below a
    gate.min_* the command exits 1 and exports nothing; else the student (LoRA merged) is
    written to output, to use as labeler.backend=hf, labeler.model=<output>.
    """
    from condlabel.distill.loop import plan_distill, run_distill

    cfg: DistillConfig = load_config("distill", args.config, args.overrides)
    log.debug("config: %s", json.dumps(cfg.redacted(), sort_keys=True))  # whole: -v, manifest
    # Before any Ray start: the training extra, the gate's ROUGE, the student's weights.
    check(
        [("student.model", TRAIN), ("gate", DISTILL)],
        [Weights("student.model", cfg.student.model)],
        cfg.storage,
    )
    if args.dry_run:
        plan = plan_distill(cfg)
        print(
            f"would distill {cfg.student.model} on {plan.train_chunks} chunk(s) from "
            f"{len(plan.files)} file(s); {plan.holdout_chunks} held out, "
            f"{len(plan.gate_keys)} judged by the gate; export to {cfg.output}"
        )
        return EXIT_OK
    summary = run_distill(cfg)
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2, default=str))
    else:
        print("\n".join(summary.lines()))
    return EXIT_OK if summary.exported else EXIT_FAILED


COMMANDS: Commands = {"distill": (distill_flags, cmd_distill)}
