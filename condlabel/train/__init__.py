"""Conditional finetuning on tagged shards (Ray Train) and tag-adherence evaluation.

data.py            tagged rows (latest versions only) -> training text -> tokens -> packed
                   blocks; the one rendering of a conditional, shared with evaluation (Ray-free)
control_tokens.py  add the control tokens to tokenizer and model; start their rows apart
optim.py           AdamW and the learning-rate schedule
checkpoint.py      load (base or resume), checkpoint, export; state dicts for DDP and FSDP
loop.py            the Ray wiring: `plan_training`, `run_training`, `train_loop_per_worker`
evaluate.py        `run_evaluation`: generate under conditionals, relabel, misalignment score
"""
