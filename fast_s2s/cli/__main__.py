"""`python -m fast_s2s.cli ...` (and `torchrun ... -m fast_s2s.cli train ...`): fast-s2s."""

import sys

from fast_s2s.cli import main

sys.exit(main())
