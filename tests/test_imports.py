"""Ray stays at the edges: the core modules import without Ray, torch or transformers."""

from __future__ import annotations

import subprocess
import sys


def test_core_modules_do_not_import_ray_or_torch():
    code = (
        "import sys\n"
        "import condlabel, condlabel.config, condlabel.schema, condlabel.convert.reading,"
        " condlabel.convert.chunking, condlabel.convert.stages, condlabel.convert.format,"
        " condlabel.convert.runstate, condlabel.labelers.prompts, condlabel.storage,"
        " condlabel.readback, condlabel.labelers, condlabel.labelers.keyphrase, condlabel.cli\n"
        "heavy = [m for m in ('ray', 'torch', 'transformers', 'vllm') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
