"""`condlabel ...`: convert, demo, inspect, config.

Exit codes: 0 success, 2 bad configuration or arguments, 3 storage problem (missing input,
unwritable output, unreachable endpoint), 4 run refused (another writer holds the output, or
labelers would mix), 1 anything else. The reason is always on the last line printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import textwrap
from pathlib import Path

from condlabel.config import ConfigError, ConvertConfig, describe_fields, load_convert_config
from condlabel.storage import StorageError

log = logging.getLogger("condlabel")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_STORAGE, EXIT_REFUSED = 0, 1, 2, 3, 4


def _config_keys_epilog(model: type = ConvertConfig) -> str:
    rows = describe_fields(model)
    width = max(len(k) for k, _, _ in rows)
    lines = ["configuration keys (YAML file or --set key=value; default in brackets):"]
    for key, default, doc in rows:
        wrapped = textwrap.wrap(f"{doc} [{default}]", 100 - width - 4) or [f"[{default}]"]
        lines.append(f"  {key.ljust(width)}  {wrapped[0]}")
        lines.extend(f"  {' ' * width}  {more}" for more in wrapped[1:])
    return "\n".join(lines)


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="FILE",
        help="YAML run config; without it the embedded defaults are used",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key, e.g. --set chunking.max_words=1000 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="condlabel",
        description="Turn text corpora into conditional-pretraining data: chunk documents, label "
        "each chunk with a synopsis and tags on a Ray actor pool, write tagged parquet.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and the summary")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter

    convert = sub.add_parser(
        "convert",
        help="label a corpus and write tagged parquet shards",
        description="Read documents from --input (files, directories/prefixes or globs; local, "
        "file:// or s3://), split them into chunks, label every chunk on a Ray actor pool and "
        "write parquet shards under --output. S3 endpoint and credentials come from the AWS "
        "environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, profiles, instance roles).",
        epilog=_config_keys_epilog(),
        formatter_class=fmt,
    )
    _add_config_args(convert)
    convert.add_argument(
        "--input",
        dest="inputs",
        action="append",
        metavar="URI",
        help="input file, directory/prefix or glob (repeatable; replaces input.paths)",
    )
    convert.add_argument("--output", metavar="URI", help="output prefix (replaces output.uri)")
    convert.add_argument("--json", action="store_true", help="print the final summary as JSON")
    convert.add_argument(
        "--dry-run",
        action="store_true",
        help="list the input files and, per file, the documents and chunks that "
        "would be labeled (chunks already in the output are skipped); label nothing",
    )
    convert.add_argument(
        "--allow-mixed",
        action="store_true",
        help="add rows to an output prefix that holds rows of another labeler "
        "fingerprint (refused by default)",
    )

    demo = sub.add_parser(
        "demo",
        help="build a sample corpus offline and convert it with the CPU labeler",
        description="Write a sample corpus built from text that ships with Python (help topics, "
        "module docstrings) as .jsonl, .jsonl.gz and .parquet, convert it with the embedded "
        "defaults and print where the output is, a summary and two sample rows.",
    )
    demo.add_argument("--output", metavar="DIR", help="work directory (default: a new temp dir)")
    demo.add_argument(
        "--docs",
        type=int,
        default=None,
        metavar="N",
        help="use only the first N sample documents (default: all, ~200)",
    )
    _add_config_args(demo)

    inspect = sub.add_parser(
        "inspect",
        help="summarise a tagged output prefix (local or s3://)",
        description="Read every data shard under URI and print the row and document counts, "
        "labeler fingerprints, parse-failure rate, tag frequencies, the log-prob distribution, "
        "chunk, word and token counts and sample rows; --report writes the same as an HTML "
        "page with plots.",
    )
    inspect.add_argument("uri", metavar="URI", help="output prefix written by convert")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.add_argument("--top", type=int, default=15, help="how many top tags to show")
    inspect.add_argument("--samples", type=int, default=2, help="how many sample rows to show")
    inspect.add_argument(
        "--report",
        metavar="FILE.html",
        help="also write a self-contained HTML report with plots "
        "(needs: pip install 'condlabel[report]')",
    )
    _add_config_args(inspect)

    status = sub.add_parser(
        "status",
        help="summarise the runs and totals of an output prefix",
        description="List the runs recorded under URI/_manifest/ (status, counts, time), the "
        "rows and labelers in the output, duplicate keys (should be 0) and the current lease.",
    )
    status.add_argument("uri", metavar="URI", help="output prefix written by convert")
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    _add_config_args(status)

    from condlabel.config import EvalConfig, TrainConfig

    train = sub.add_parser(
        "train",
        help="finetune a causal LM on tagged shards (Ray Train)",
        description="Stream the tagged parquet under data.paths (local or s3://) through Ray "
        "Data to a Ray Train worker group that finetunes model.path (full or LoRA, DDP or FSDP) "
        "on prefix + text. Checkpoints (Hugging Face format) go to checkpoint.storage_path every "
        "checkpoint.every_steps; rerunning with the same checkpoint.name resumes from the latest. "
        "The final model is exported to checkpoint.export_uri.",
        epilog=_config_keys_epilog(TrainConfig),
        formatter_class=fmt,
    )
    _add_config_args(train)
    train.add_argument(
        "--dry-run", action="store_true", help="check the inputs and print the plan; train nothing"
    )
    train.add_argument("--json", action="store_true", help="print the final summary as JSON")

    evaluate = sub.add_parser(
        "eval",
        help="measure how well a trained model honours its conditionals",
        description="Generate continuations under each configured conditional (control tokens, "
        "tags, synopsis) and unconditioned, relabel them with the configured classifiers or "
        "labeler, and print per conditional the misalignment score (share of generations whose "
        "labels contradict the conditional) next to the unconditioned baseline.",
        epilog=_config_keys_epilog(EvalConfig),
        formatter_class=fmt,
    )
    _add_config_args(evaluate)
    evaluate.add_argument("--json", action="store_true", help="print the report as JSON")

    merge = sub.add_parser(
        "merge",
        help="merge a LoRA adapter into its base model and write it (safetensors)",
        description="Load --base and --adapter (local directory, s3:// prefix or hub id; "
        "safetensors only), merge the adapter into the weights (float32 on the CPU, so the "
        "merge is exact) and write the merged model and tokenizer to --output (local directory "
        "or s3:// prefix). Point labeler.hf.model at the result and leave labeler.hf.adapter "
        "unset: a cluster merges once and every actor loads merged weights.",
    )
    merge.add_argument("--base", required=True, metavar="MODEL", help="base model")
    merge.add_argument("--adapter", required=True, metavar="ADAPTER", help="peft LoRA adapter")
    merge.add_argument("--output", required=True, metavar="URI", help="where to write the merge")
    merge.add_argument("--revision", help="hub revision of --base")
    merge.add_argument("--adapter-revision", help="hub revision of --adapter")
    merge.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        default="auto",
        help="dtype of the saved weights (auto: the base's)",
    )
    _add_config_args(merge)  # storage.* options for s3:// (endpoint, profile)

    config = sub.add_parser(
        "config",
        help="validate and print a resolved configuration (defaults + file + --set)",
        epilog=_config_keys_epilog(),
        formatter_class=fmt,
    )
    config.add_argument(
        "--kind",
        default="convert",
        help="which configuration: convert (default), or another registered kind "
        "such as train or eval",
    )
    _add_config_args(config)
    return parser


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )


def _print_summary(summary, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print("\n".join(summary.lines()))


def cmd_convert(args: argparse.Namespace) -> int:
    from condlabel.convert.pipeline import dry_run, plan_lines, run_conversion

    cfg = load_convert_config(args.config, args.overrides, args.inputs, args.output)
    log.info("config: %s", json.dumps(cfg.redacted(), sort_keys=True))
    if args.dry_run:
        plan = dry_run(cfg, allow_mixed=args.allow_mixed)
        if args.json:
            print(json.dumps(plan, indent=2))
        else:
            print("\n".join(plan_lines(plan)))
        return EXIT_OK
    summary = run_conversion(cfg, allow_mixed=args.allow_mixed)
    _print_summary(summary, args.json)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from condlabel.convert.pipeline import run_conversion
    from condlabel.demo import write_sample_corpus
    from condlabel.readback import inspect_lines, read_tagged, summarize

    work = Path(args.output or tempfile.mkdtemp(prefix="condlabel-demo-")).resolve()
    files = write_sample_corpus(work / "corpus", limit=args.docs)
    print(f"sample corpus: {len(files)} files in {work / 'corpus'}")
    cfg = load_convert_config(
        args.config, args.overrides, inputs=[str(work / "corpus")], output=str(work / "tagged")
    )
    summary = run_conversion(cfg)
    print("\n".join(summary.lines()))
    print(
        "\n".join(
            inspect_lines(summarize(read_tagged(cfg.output.uri, storage=cfg.storage)), top=10)
        )
    )
    print(f"\noutput: {cfg.output.uri}\nread it back: condlabel inspect {cfg.output.uri}")
    return EXIT_OK


def cmd_inspect(args: argparse.Namespace) -> int:
    from condlabel.readback import inspect_lines, inspect_output

    storage = load_convert_config(args.config, args.overrides).storage
    if args.report:
        from condlabel.report import require_matplotlib

        require_matplotlib()  # before reading anything: fail fast with the install line
    info, table = inspect_output(args.uri, storage=storage, top_tags=args.top, samples=args.samples)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        print("\n".join(inspect_lines(info, args.top)))
    if args.report:
        from condlabel.report import write_report

        path = write_report(args.report, info, table, source=args.uri)
        print(f"report: {path}", file=sys.stderr if args.json else sys.stdout)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from condlabel.convert.runstate import status_info, status_lines

    storage = load_convert_config(args.config, args.overrides).storage
    info = status_info(args.uri, storage)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        print("\n".join(status_lines(info)))
    return EXIT_OK


def cmd_merge(args: argparse.Namespace) -> int:
    from condlabel.models import merge_model

    storage = load_convert_config(args.config, args.overrides).storage
    uri = merge_model(
        args.base,
        args.adapter,
        args.output,
        revision=args.revision,
        adapter_revision=args.adapter_revision,
        dtype=args.dtype,
        storage=storage,
    )
    print(
        f"merged model written to {uri}\nuse it with: --set labeler.backend=hf "
        f"--set labeler.hf.model={uri}"
    )
    return EXIT_OK


def cmd_config(args: argparse.Namespace) -> int:
    import yaml

    from condlabel.config import load_config

    cfg = load_config(args.kind, args.config, args.overrides)
    data = cfg.redacted() if hasattr(cfg, "redacted") else cfg.model_dump(mode="json")
    print(yaml.safe_dump(data, sort_keys=False), end="")
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    from condlabel.config import load_train_config
    from condlabel.train.loop import plan_training, run_training

    cfg = load_train_config(args.config, args.overrides)
    log.info("config: %s", json.dumps(cfg.redacted(), sort_keys=True))
    if args.dry_run:
        files = plan_training(cfg)
        c, o = cfg.compute, cfg.optimization
        print(
            f"would train {cfg.model.path} ({'LoRA' if cfg.model.lora.enabled else 'full'}, "
            f"{o.strategy}) on {len(files)} parquet file(s):"
        )
        for uri in files[:20]:
            print(f"  {uri}")
        if len(files) > 20:
            print(f"  ... and {len(files) - 20} more")
        print(
            f"workers {c.num_workers} x {c.cpus_per_worker} CPU"
            + (f" + {c.gpus_per_worker} GPU" if c.use_gpu else "")
            + f"; {o.max_steps} steps of {c.num_workers * o.micro_batch_size * o.grad_accum_steps}"
            f" x {o.seq_len} tokens; checkpoints every {cfg.checkpoint.every_steps} steps to "
            f"{cfg.checkpoint.storage_path}/{cfg.checkpoint.name}; export to "
            f"{cfg.checkpoint.effective_export_uri}"
        )
        return EXIT_OK
    summary = run_training(cfg)
    _print_summary(summary, args.json)
    return EXIT_OK


def cmd_eval(args: argparse.Namespace) -> int:
    from condlabel.config import load_eval_config
    from condlabel.train.evaluate import run_evaluation

    cfg = load_eval_config(args.config, args.overrides)
    log.info("config: %s", json.dumps(cfg.redacted(), sort_keys=True))
    report = run_evaluation(cfg)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        print(f"model {report.model}; judges: {', '.join(report.judges)}")
        print(report.table())
        if cfg.output:
            print(f"report: {cfg.output}")
    return EXIT_OK


COMMANDS = {
    "convert": cmd_convert,
    "demo": cmd_demo,
    "inspect": cmd_inspect,
    "status": cmd_status,
    "config": cmd_config,
    "train": cmd_train,
    "eval": cmd_eval,
    "merge": cmd_merge,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.quiet)
    try:
        return _run(args)
    finally:
        sys.stdout.flush()


def _run(args: argparse.Namespace) -> int:
    from condlabel.convert.runstate import RunRefused

    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"condlabel {args.command}: {exc}", file=sys.stderr)
        print(f"error: invalid configuration ({len(exc.problems)} problem(s))", file=sys.stderr)
        return EXIT_CONFIG
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STORAGE
    except RunRefused as exc:
        print(f"error: run refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        log.exception("condlabel %s failed", args.command)
        first = (str(exc).strip().splitlines() or [""])[0][:500]
        print(f"error: {type(exc).__name__}: {first}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
