"""Distillation: a small student labeler learns the teacher's labels, is gated on held-out
agreement, and labels the corpus (`condlabel distill`).

    data.py     teacher rows -> (prompt ids, target ids), as the labeler encodes prompts; the
                holdout split by document hash; collation (no Ray, no torch)
    metrics.py  the gate: parse rate, tag precision/recall/F1, ROUGE-L, calibration (no Ray)
    student.py  loading the student for training, resuming, exporting (torch, no Ray)
    loop.py     the Ray Train worker loop and the driver: train, gate, export
"""
