"""`python -m condlabel.cli`."""

import sys

from condlabel.cli import main

sys.exit(main())
