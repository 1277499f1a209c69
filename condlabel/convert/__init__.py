"""Conversion: read -> chunk -> skip done -> label -> classify -> format -> write.

`reading` and `chunking` turn corpus files into chunks, `stages` holds each step as a plain
function over pyarrow tables, `runstate` makes runs resumable (done index, lease, manifest),
`format` renders the conditional prefix, and `pipeline` is the one place that wires the steps
into a Ray Data graph.
"""
