#!/usr/bin/env bash
# Metrics with the real tools: Debian's prometheus-node-exporter serves the daemon's metrics_file
# through its textfile collector (scraped with curl) while tokens rotate, ECR fails and recovers;
# promtool (Debian's prometheus) accepts the file and `ecr-refresherd metrics`; no secret the fake
# issued is ever in a scrape.
#
# Runs in a private network namespace (its own loopback only).
# Usage: tests/system/metrics.sh   (root; after `cargo build --workspace`)
set -euo pipefail
cd "$(dirname "$0")/../.."

step() { echo "== metrics: $*"; }
fail() { echo "FAILED metrics test: $*" >&2; exit 1; }
skip() { echo "SKIPPED metrics test: $*"; exit 0; }

NODE_EXPORTER=/usr/bin/prometheus-node-exporter
if [ "${1:-}" != "--inside" ]; then
    [ "$(id -u)" = 0 ] || skip "needs root (a network namespace)"
    for c in "$NODE_EXPORTER" promtool curl unshare ip python3; do
        command -v "$c" >/dev/null || skip "$c is not installed"
    done
    [ -x target/debug/ecr-refresherd ] && [ -x target/debug/fake-aws ] \
        || cargo build --quiet --locked --workspace --bins
    exec unshare --net -- "$0" --inside
fi

H=111111111111.dkr.ecr.us-east-1.amazonaws.com
BIN=$PWD/target/debug/ecr-refresherd
FAKE=$PWD/target/debug/fake-aws
work=$(mktemp -d /var/tmp/ecr-refresherd-metrics.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
ip link set lo up

step "the fake ECR: 6-second tokens"
"$FAKE" --listen 127.0.0.1:0 --lifetime 6 >"$work/fake.out" 2>"$work/fake.err" &
pids+=($!)
for _ in $(seq 200); do grep -q '^listening ' "$work/fake.out" 2>/dev/null && break; sleep 0.05; done
endpoint=$(sed -n 's/^listening //p' "$work/fake.out")
[ -n "$endpoint" ] || fail "the fake ECR did not start"

step "ecr-refresherd with metrics_file in a textfile-collector directory that does not exist yet"
textfile="$work/textfile"
prom="$textfile/ecr-refresherd.prom"
cat >"$work/config.toml" <<TOML
[daemon]
state_dir = "$work/state"
socket = "$work/ctl.sock"
min_interval = "1s"
retry_min = "1s"
retry_max = "2s"
metrics_file = "$prom"
[[registry]]
host = "$H"
[[target]]
path = "$work/root/.docker/config.json"
TOML
env -i PATH=/usr/bin:/bin HOME="$work" AWS_EC2_METADATA_DISABLED=true \
    AWS_ACCESS_KEY_ID=FAKEACCESSKEY AWS_SECRET_ACCESS_KEY=fake-secret-key-do-not-use \
    AWS_ENDPOINT_URL_ECR="$endpoint" "$BIN" --config "$work/config.toml" run 2>"$work/daemon.log" &
pids+=($!)
for _ in $(seq 100); do [ -s "$prom" ] && break; sleep 0.1; done
[ -s "$prom" ] || { cat "$work/daemon.log"; fail "no metrics file"; }

step "promtool check metrics accepts the file and ecr-refresherd metrics"
promtool check metrics <"$prom" || fail "promtool refused $prom"
"$BIN" metrics --socket "$work/ctl.sock" >"$work/socket.prom" || fail "ecr-refresherd metrics exited $?"
promtool check metrics <"$work/socket.prom" || fail "promtool refused the socket's metrics"
echo "promtool: both clean ($(grep -c '^ecr_refresherd_' "$prom") samples in the file)"

step "node_exporter $("$NODE_EXPORTER" --version 2>&1 | awk 'NR==1{print $3}') serves them (textfile collector only, on loopback)"
"$NODE_EXPORTER" --web.listen-address=127.0.0.1:9911 --collector.disable-defaults --collector.textfile \
    --collector.textfile.directory="$textfile" >"$work/node.log" 2>&1 &
pids+=($!)
scrape() { curl -fsS --noproxy '*' http://127.0.0.1:9911/metrics >"$work/scrape.txt" 2>"$work/curl.err"; }
for _ in $(seq 100); do scrape && break; sleep 0.1; done
scrape || { cat "$work/node.log" "$work/curl.err"; fail "cannot scrape node_exporter"; }
# `value SERIES`: the scraped value of a series, exactly as named with its labels.
value() { scrape && awk -v s="$1" '$1 == s {print $2}' "$work/scrape.txt"; }
expiry_series="ecr_refresherd_token_expiry_timestamp_seconds{registry=\"$H\"}"
# The first file may be written before the first token (rewrites are at least a second apart).
for _ in $(seq 100); do [ -n "$(value "$expiry_series")" ] && break; sleep 0.1; done
[ -n "$(value "$expiry_series")" ] || { cat "$work/scrape.txt"; fail "no token expiry in the scrape"; }
[ "$(value 'node_textfile_scrape_error')" = 0 ] || fail "node_exporter could not read the file"
value "node_textfile_mtime_seconds{file=\"$prom\"}" | grep -q . \
    || value 'node_textfile_mtime_seconds{file="ecr-refresherd.prom"}' | grep -q . \
    || { grep textfile_mtime "$work/scrape.txt"; fail "no node_textfile_mtime_seconds for the file"; }

step "the scraped expiry follows the token rotations (12 s)"
expiries=()
end=$((SECONDS + 12))
while [ $SECONDS -lt $end ]; do
    e=$(value "$expiry_series")
    case " ${expiries[*]} " in *" $e "*) ;; *) expiries+=("$e") ;; esac
    sleep 0.5
done
[ "${#expiries[@]}" -ge 2 ] || fail "the expiry never changed: ${expiries[*]}"
echo "expiries seen: ${expiries[*]}"

step "ECR fails: failures are counted and the state is failing; then it recovers"
curl -fsS --noproxy '*' -X POST "$endpoint/_fake/fault?service=ecr&fault=throttle" >/dev/null
failing_series="ecr_refresherd_registry_state{registry=\"$H\",state=\"failing\"}"
failures_series="ecr_refresherd_refreshes_total{registry=\"$H\",result=\"failure\"}"
for _ in $(seq 150); do [ "$(value "$failing_series")" = 1 ] && break; sleep 0.2; done
[ "$(value "$failing_series")" = 1 ] || { cat "$work/scrape.txt"; fail "the state never became failing"; }
echo "failing: $failures_series $(value "$failures_series")"
curl -fsS --noproxy '*' -X POST "$endpoint/_fake/fault?service=ecr&fault=none" >/dev/null
fresh_series="ecr_refresherd_registry_state{registry=\"$H\",state=\"fresh\"}"
for _ in $(seq 150); do [ "$(value "$fresh_series")" = 1 ] && break; sleep 0.2; done
[ "$(value "$fresh_series")" = 1 ] || { cat "$work/scrape.txt"; fail "never fresh again"; }
[ "$(value "ecr_refresherd_registry_consecutive_failures{registry=\"$H\"}")" = 0 ] || fail "failures not reset"
echo "fresh again; $failures_series $(value "$failures_series")"

step "no secret the fake issued is in any scrape or metrics output"
python3 - "$endpoint" "$work/scrape.txt" "$prom" "$work/socket.prom" <<'PY' || fail "a secret in the metrics"
import json, sys, urllib.request
secrets = json.load(urllib.request.urlopen(sys.argv[1] + "/_fake/secrets"))
secrets += ["fake-secret-key-do-not-use", "FAKEACCESSKEY"]
for path in sys.argv[2:]:
    text = open(path).read()
    for s in secrets:
        if s and s in text:
            sys.exit(f"{path} holds a secret")
print(f"{len(secrets)} secrets checked against {len(sys.argv) - 2} outputs")
PY

step "all checks passed"
