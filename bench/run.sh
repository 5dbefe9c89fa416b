#!/usr/bin/env bash
# Runs every benchmark against the fake ECR on loopback and writes the table, with the machine
# description, into docs/BENCHMARKS.md (between its bench markers). Installs the peer tools it
# compares against: awscli (PyPI, in target/bench-venv), skopeo, docker-registry, GNU time, Amazon's
# docker-credential-ecr-login and socat (Debian).
# Usage: bench/run.sh [--quick] [--only helper|idle]
#   --quick: 10 s idle windows instead of 240 s (and 60 s at scale); --only helper: the credential helper comparison;
#   --only idle: the idle and at-scale rows (memory, idle CPU from a cgroup of the daemon's own)
#   alone, printed (docs untouched).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=
for p in time skopeo docker-registry python3-venv amazon-ecr-credential-helper socat openssl iproute2; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    else
        echo "bench: please install:$missing" >&2
        exit 2
    fi
fi
if [ ! -x target/bench-venv/bin/aws ]; then
    python3 -m venv target/bench-venv
    target/bench-venv/bin/pip install --quiet awscli
fi
cargo build --release --locked -p ecr-refresherd -p fake-aws -p ecr-bench
target/release/ecr-bench --bin target/release/ecr-refresherd --aws "$PWD/target/bench-venv/bin/aws" \
    --out docs/BENCHMARKS.md "$@"
