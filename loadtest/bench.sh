#!/usr/bin/env bash
# Builds Plenary and the load tester with --release, then runs the standard scenarios
# against a fresh local Plenary per scenario (loopback only) and prints one table.
#
#   loadtest/bench.sh                          # defaults: 10 speakers, 50 listeners, 50 viewers, 20 s each
#   loadtest/bench.sh --listeners 100 --viewers 100 --duration 30s --json bench.json
#   loadtest/bench.sh --only d --scale 100,300 --gm-duration 20s    # the big general meeting
#   loadtest/bench.sh --only d --scale 1000 --compare-shards        # needs a server with media shards
#
# Every scenario is bounded in participants and time; see `plenary-loadtest bench --help`.
set -euo pipefail
cd "$(dirname "$0")/.."
# Built one at a time: together, Cargo unifies their dependencies' features differently and
# rebuilds every shared dependency.
cargo build --release -p plenary
cargo build --release -p plenary-loadtest
echo "machine: $(nproc) cores, $(uname -sr), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')" >&2
exec target/release/plenary-loadtest bench --plenary target/release/plenary "$@"
