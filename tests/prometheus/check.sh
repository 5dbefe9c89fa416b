#!/usr/bin/env bash
# The Prometheus alerting rules: `promtool check rules` (syntax, PromQL, templates) on
# packaging/prometheus/ecr-refresherd-alerts.yml, then `promtool test rules` on its unit tests
# (tests/prometheus/alerts.test.yml: each alert fires with its labels and annotations, resolves,
# and healthy series raise nothing). Installs Debian's `prometheus` package (it ships promtool)
# when promtool is missing and this runs as root with apt-get; skips with a reason otherwise.
# Usage: tests/prometheus/check.sh   (from anywhere; works from the repository root)
set -euo pipefail
cd "$(dirname "$0")/../.."

rules=packaging/prometheus/ecr-refresherd-alerts.yml
tests=tests/prometheus/alerts.test.yml

fail() { echo "FAILED prometheus rules: $*" >&2; exit 1; }
skip() { echo "SKIPPED prometheus rules: $*"; exit 0; }

have_promtool() { promtool --version >/dev/null 2>&1; }
if ! have_promtool; then
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
        || skip "promtool is not installed (Debian: apt-get install prometheus)"
    echo "== prometheus rules: installing promtool (Debian package prometheus)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    have_promtool || fail "the prometheus package did not provide a working promtool"
fi

version=$(promtool --version 2>&1 | awk 'NR == 1 {print $3}')
echo "== prometheus rules: promtool $version check rules $rules"
promtool check rules "$rules" || fail "promtool check rules $rules"
echo "== prometheus rules: promtool test rules $tests"
promtool test rules "$tests" || fail "promtool test rules $tests"

alerts=$(grep -c '^ *- alert: ' "$rules")
groups=$(grep -c '^ *- name: ' "$tests")
echo "OK prometheus rules: $alerts alerts valid, $groups test groups passed (promtool $version)"
