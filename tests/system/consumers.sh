#!/usr/bin/env bash
# Real consumers: a real registry (distribution, Debian's docker-registry) with TLS and htpasswd user
# `AWS` answers under an ECR host name; the fake ECR rotates that user's password with every token it
# issues; skopeo (with the docker config.json) and podman (with /run/containers/0/auth.json, its
# default for root) pull using only the files the daemon wrote. Pulls keep working across rotations
# and fail with a removed or an outdated entry.
#
# Everything runs in a private network and mount namespace: only its own loopback, its own
# /etc/hosts, /run/containers and certificate directory; the machine's files are untouched.
# Usage: tests/system/consumers.sh   (root; after `cargo build --workspace`)
set -euo pipefail
cd "$(dirname "$0")/../.."

step() { echo "== consumers: $*"; }
fail() { echo "FAILED consumers test: $*" >&2; exit 1; }
skip() { echo "SKIPPED consumers test: $*"; exit 0; }

if [ "${1:-}" != "--inside" ]; then
    [ "$(id -u)" = 0 ] || skip "needs root (namespaces, port 443)"
    for c in docker-registry skopeo podman openssl unshare ip python3; do
        command -v "$c" >/dev/null || skip "$c is not installed"
    done
    [ -x target/debug/ecr-refresherd ] && [ -x target/debug/fake-aws ] || cargo build --quiet --locked --workspace --bins
    exec unshare --net --mount --propagation private -- "$0" --inside
fi

H=111111111111.dkr.ecr.us-east-1.amazonaws.com
BIN=$PWD/target/debug/ecr-refresherd
FAKE=$PWD/target/debug/fake-aws
work=$(mktemp -d /var/tmp/ecr-refresherd-consumers.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

step "private network namespace with loopback only; $H is 127.0.0.1 in a private /etc/hosts"
ip link set lo up
printf '127.0.0.1 localhost %s\n' "$H" >"$work/hosts"
mount --bind "$work/hosts" /etc/hosts
mkdir -p "$work/certs.d/$H" "$work/run-containers"
mount -t tmpfs tmpfs /run/containers 2>/dev/null || { mkdir -p /run/containers && mount -t tmpfs tmpfs /run/containers; }
mkdir -p /etc/containers/certs.d
mount --bind "$work/certs.d" /etc/containers/certs.d

step "TLS certificate for $H, trusted by skopeo and podman through certs.d"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=$H" -addext "subjectAltName=DNS:$H" \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cp "$work/cert.pem" "$work/certs.d/$H/ca.crt"

step "the fake ECR: 8-second tokens, each new password becomes the registry's only AWS password"
"$FAKE" --listen 127.0.0.1:0 --lifetime 8 --htpasswd "$work/htpasswd" >"$work/fake.out" 2>"$work/fake.err" &
pids+=($!)
for _ in $(seq 200); do grep -q '^listening ' "$work/fake.out" 2>/dev/null && break; sleep 0.05; done
endpoint=$(sed -n 's/^listening //p' "$work/fake.out")
[ -n "$endpoint" ] || fail "the fake ECR did not start"

step "the registry (distribution $(docker-registry --version | awk '{print $3}')) on $H:443 with TLS and htpasswd"
bootstrap=bootstrap-$RANDOM$RANDOM
htpasswd -Bbn AWS "$bootstrap" >"$work/htpasswd" 2>/dev/null
cat >"$work/registry.yml" <<YML
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: "127.0.0.1:443", tls: {certificate: $work/cert.pem, key: $work/key.pem}}
auth: {htpasswd: {realm: ecr, path: $work/htpasswd}}
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/443) 2>/dev/null && break; sleep 0.1; done

step "push a small image with the bootstrap password"
python3 tests/system/oci-image.py "$work/oci"
skopeo copy --quiet --dest-creds "AWS:$bootstrap" "oci:$work/oci:latest" "docker://$H/app:v1" \
    || fail "cannot push the test image"

step "ecr-refresherd keeps root's docker config and podman's /run/containers/0/auth.json fresh"
mkdir -p "$work/root/.docker"
cat >"$work/config.toml" <<TOML
[daemon]
state_dir = "$work/state"
socket = "$work/ctl.sock"
min_interval = "1s"
retry_min = "1s"
[[registry]]
host = "$H"
[[target]]
path = "$work/root/.docker/config.json"
[[target]]
path = "/run/containers/0/auth.json"
TOML
env -i PATH=/usr/bin:/bin HOME="$work" AWS_EC2_METADATA_DISABLED=true \
    AWS_ACCESS_KEY_ID=FAKEACCESSKEY AWS_SECRET_ACCESS_KEY=fake-secret-key-do-not-use \
    AWS_ENDPOINT_URL_ECR="$endpoint" "$BIN" --config "$work/config.toml" run 2>"$work/daemon.log" &
pids+=($!)
for _ in $(seq 100); do [ -s /run/containers/0/auth.json ] && break; sleep 0.1; done
[ -s /run/containers/0/auth.json ] || { cat "$work/daemon.log"; fail "the daemon wrote nothing"; }

# No other credentials anywhere: a private HOME, no XDG_RUNTIME_DIR or REGISTRY_AUTH_FILE.
export HOME="$work/home"
unset XDG_RUNTIME_DIR REGISTRY_AUTH_FILE DOCKER_CONFIG
mkdir -p "$HOME"
skopeo_inspect() { skopeo inspect --authfile "$1" --format '{{.Digest}}' "docker://$H/app:v1" >/dev/null 2>"$work/skopeo.err"; }
# podman as root reads /run/containers/0/auth.json by default; `podman_pull FILE` uses another file.
podman_pull() {
    podman --root /run/containers/proot --runroot /run/containers/prun --storage-driver vfs pull --quiet \
        ${1:+--authfile "$1"} "$H/app:v1" >/dev/null 2>"$work/podman.err"
}
token_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["auths"][sys.argv[2]]["auth"])' "$1" "$H"; }

step "pulls keep working across password rotations (about every 4 s, for 20 s)"
seen=()
ok=0
end=$((SECONDS + 20))
while [ $SECONDS -lt $end ]; do
    t=$(token_of "$work/root/.docker/config.json")
    case " ${seen[*]} " in *" $t "*) ;; *) seen+=("$t") ;; esac
    # A pull that lands in the instant between the fake rotating the password and the daemon
    # writing the new token may fail once; right after, it must work.
    skopeo_inspect "$work/root/.docker/config.json" || { sleep 0.3; skopeo_inspect "$work/root/.docker/config.json"; } \
        || { cat "$work/skopeo.err"; fail "skopeo with the daemon's docker config.json"; }
    podman_pull || { sleep 0.3; podman_pull; } || { cat "$work/podman.err"; fail "podman with /run/containers/0/auth.json"; }
    ok=$((ok + 1))
    sleep 1
done
[ "${#seen[@]}" -ge 4 ] || fail "only ${#seen[@]} tokens seen: the password did not rotate"
echo "$ok rounds of skopeo inspect + podman pull succeeded across ${#seen[@]} tokens"

step "a removed entry fails"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); del d["auths"][sys.argv[2]]; json.dump(d,open(sys.argv[3],"w"))' \
    "$work/root/.docker/config.json" "$H" "$work/removed.json"
if skopeo_inspect "$work/removed.json"; then fail "a pull without the entry worked"; fi
grep -qiE "unauthorized|authentication required" "$work/skopeo.err" || { cat "$work/skopeo.err"; fail "unexpected error"; }
echo "skopeo refused: $(grep -oiE "unauthorized[^\"]*|authentication required" "$work/skopeo.err" | head -n1)"
if podman_pull "$work/removed.json"; then fail "podman pulled without the entry"; fi
echo "podman refused: $(grep -oiE "unauthorized[^\"]*|authentication required" "$work/podman.err" | head -n1)"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); del d["auths"][sys.argv[2]]; json.dump(d,open(sys.argv[1]+".tmp","w"))' \
    /run/containers/0/auth.json "$H"
mv /run/containers/0/auth.json.tmp /run/containers/0/auth.json   # like `podman logout`
for _ in $(seq 50); do grep -q "$H" /run/containers/0/auth.json && break; sleep 0.05; done
podman_pull || fail "the daemon did not restore podman's entry"
echo "podman logout-style removal healed by the daemon; podman pulls again"

step "an outdated entry (a token from before the last rotation) fails"
cp "$work/root/.docker/config.json" "$work/old.json"
old=$(token_of "$work/old.json")
for _ in $(seq 200); do [ "$(token_of "$work/root/.docker/config.json")" != "$old" ] && break; sleep 0.1; done
[ "$(token_of "$work/root/.docker/config.json")" != "$old" ] || fail "no rotation"
if skopeo_inspect "$work/old.json"; then fail "a pull with the outdated token worked"; fi
skopeo_inspect "$work/root/.docker/config.json" || fail "the fresh entry does not work"
echo "the outdated token is refused, the fresh one works"

echo "== consumers: all checks passed"
