"""python -m fast_s2s.pretrained CHECKPOINT NAME: see export.py."""

import sys

from fast_s2s.pretrained.export import main

sys.exit(main())
