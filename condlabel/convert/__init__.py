"""Conversion, the data path only: read -> chunk -> skip done -> label -> classify -> format ->
write.

`reading` and `chunking` turn corpus files into chunks (sentence boundaries come from
`condlabel.sentences`, shared with the keyphrase labeler); `stages` holds each step as a plain
function over pyarrow tables; `format` adds the conditional text; and `pipeline` is the one
place that wires the steps into a Ray Data graph. What is done and what is current, the lease,
the manifest and the run's counts live behind `condlabel.runs`.
"""
