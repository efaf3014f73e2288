#!/usr/bin/env bash
# The long chaos run (CI runs a 30 s one): mosquitto killed and restarted every 2-5 s while
# three pipelines run; prints results made, received, lost and duplicated per pipeline, the
# broker kills, resident memory and the watchdog's longest gap.
#
#   scripts/chaos.sh [minutes=5] [seed=7]
set -euo pipefail
minutes=${1:-5}; seed=${2:-7}
cd "$(dirname "$0")/.."
CHAOS_SECS=$(( minutes * 60 )) CHAOS_SEED=$seed \
  cargo test --all-features --test chaos -- --nocapture 2>&1 | grep -v "MQTT broker unreachable\|MQTT connection lost"
