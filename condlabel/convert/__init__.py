"""Conversion: read -> chunk -> skip done -> label -> classify -> format -> write.

`reading` and `chunking` turn corpus files into chunks (sentence boundaries come from
`condlabel.sentences`, shared with the keyphrase labeler); `stages` holds each step as a plain
function over pyarrow tables; `runstate` makes runs resumable (done index, lease); `summary`
counts a run and writes its manifest; `progress` shows it (one bar on a terminal, else a line
per interval); `format` renders the conditional prefix; and `pipeline` is the one place that
wires the steps into a Ray Data graph.
"""
