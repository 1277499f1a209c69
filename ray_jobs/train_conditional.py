"""`ray job submit` entrypoint for conditional finetuning; the same code path as `condlabel train`.

    ray job submit --address http://HEAD:8265 --runtime-env ray_jobs/runtime_env.yaml \
        --working-dir . -- python ray_jobs/train_conditional.py \
        --config ray_jobs/configs/train_gpu_lora.yaml

Rerunning the same command (same `checkpoint.name`) resumes from the latest checkpoint. It takes
every flag of `condlabel train`, and -v for debug logs and Ray's own logs on the console.
"""

import sys

from condlabel.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
