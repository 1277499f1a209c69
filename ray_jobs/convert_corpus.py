"""`ray job submit` entrypoint for a conversion; the same code path as `condlabel convert`.

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python ray_jobs/convert_corpus.py --config ray_jobs/configs/s3_keyphrase.yaml

It takes every flag of `condlabel convert`, and -v for debug logs and Ray's own logs on the
console.
"""

import sys

from condlabel.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
