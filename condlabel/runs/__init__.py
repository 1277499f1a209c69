"""Run bookkeeping: one run of a conversion over an output prefix, from its lease to its
manifest. The rows of the output are the one source of truth; everything else here is derived
from them or is a cache that a full check rebuilds.

    lease       one writer per output prefix (`lease`, `holder`)
    sequence    each run's `seq`, 1 + the largest recorded, taken under the lease (`sequence`)
    done        which chunks need no labeling: the ledger of complete input files, the scope
                of the done check, the done index (`ledger`, `scope`, `donecheck`, `runstate`)
    current     per document, the version of its highest-`seq` row (`condlabel.current`)
    record      the summary, manifest, costs and progress of a run (`summary`, `costs`,
                `progress`)
"""

from condlabel.runs.costs import add_tokens, busy_share, counter_seconds
from condlabel.runs.lease import LeaseGuard, RunRefused
from condlabel.runs.ledger import add_written, complete_rows, rerun_plan
from condlabel.runs.progress import Progress
from condlabel.runs.run import Run, open_run, output_state
from condlabel.runs.runstate import output_rows
from condlabel.runs.sequence import list_output
from condlabel.runs.summary import FileStats, RunSummary, check_labeler_errors, new_run_id

__all__ = [
    "FileStats",
    "LeaseGuard",
    "Progress",
    "Run",
    "RunRefused",
    "RunSummary",
    "add_tokens",
    "add_written",
    "busy_share",
    "check_labeler_errors",
    "complete_rows",
    "counter_seconds",
    "list_output",
    "new_run_id",
    "open_run",
    "output_rows",
    "output_state",
    "rerun_plan",
]
