"""Chunks/s of a conversion over many one-document files: one read task per file vs files
grouped into read tasks by size (issue 12, item 16).

    python bench/small_files.py [--files 2000] [--before-code DIR]

Both variants run `condlabel convert` in a fresh subprocess (its own embedded Ray) over the same
corpus into a new output. "one file per task" sets `condlabel.convert.inputs.BYTES_PER_READ_TASK`
to 1 in that subprocess; "grouped" uses the default. `--before-code DIR` runs the "one file per task" variant with the condlabel
found in DIR instead (e.g. `git archive HEAD | tar -x -C DIR`), to measure the code before the
change as it was. Prints both rates, their ratio and the machine's load average.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from condlabel.demo import sample_documents


def build_corpus(directory: Path, files: int) -> None:
    docs = sample_documents()
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        doc = docs[i % len(docs)]
        record = {"id": f"{doc['id']}-{i}", "text": doc["text"]}
        (directory / f"doc-{i:05d}.jsonl").write_text(json.dumps(record) + "\n")


# `python -c` entry that sets the read-task size (argv[1] bytes) before running the CLI.
ONE_PER_TASK = (
    "import sys; import condlabel.convert.inputs as inputs; "
    "inputs.BYTES_PER_READ_TASK = int(sys.argv.pop(1)); "
    "from condlabel.cli import main; sys.exit(main(sys.argv[1:]))"
)


def convert(corpus: Path, output: Path, per_task: int | None, code: str | None) -> dict:
    entry = ["-m", "condlabel.cli"] if per_task is None else ["-c", ONE_PER_TASK, str(per_task)]
    args = [sys.executable, *entry, "convert", "--input", str(corpus)]
    args += ["--output", str(output), "--json", "--set", "chunking.max_words=400"]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if code:
        env["PYTHONPATH"] = code
    done = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"convert failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--before-code", default=None, metavar="DIR")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="small-files-") as tmp:
        corpus = Path(tmp) / "corpus"
        build_corpus(corpus, args.files)
        # The code before the change knows no read-task size: it reads a file per task.
        one_per_task = None if args.before_code else 1
        before = convert(corpus, Path(tmp) / "one-per-task", one_per_task, args.before_code)
        after = convert(corpus, Path(tmp) / "grouped", None, None)
    for name, run in (("one file per task", before), ("grouped", after)):
        print(
            f"{name:>18}: {run['rows_written']} chunks in {run['seconds']:.1f} s, "
            f"{run['chunks_per_second']:.1f} chunks/s"
        )
    ratio = after["chunks_per_second"] / before["chunks_per_second"]
    print(f"grouped / one file per task: {ratio:.2f}x   (load average {os.getloadavg()})")


if __name__ == "__main__":
    main()
