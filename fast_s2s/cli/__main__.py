"""`python -m fast_s2s.cli ...` (and `torchrun ... -m fast_s2s.cli train ...`): fast-s2s."""

import sys

from fast_s2s.cli import main

# Guarded: `train --processes N` starts replicas with multiprocessing's "spawn", which imports
# this module again in each of them (as __mp_main__), where it must not run the CLI.
if __name__ == "__main__":
    sys.exit(main())
