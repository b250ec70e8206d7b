#!/usr/bin/env bash
# The README's main job: set up, check every kernel against its reference, a quick benchmark,
# then train a date-normalisation model for about a minute and translate a few dates (the
# attention map of the first goes to runs/attention.png).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/fast-s2s verify
.venv/bin/fast-s2s bench --quick
.venv/bin/fast-s2s train --task dates --time-budget 60 --checkpoint runs/dates.pt --overwrite \
  --plot runs/attention.png --demo "tuesday 3 march 1998" "03/03/98" "March 3rd, 1998" "SAT 29 FEB 2020"
