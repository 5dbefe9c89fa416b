#!/usr/bin/env bash
# A real Docker Engine (Debian's docker.io) against a real registry (distribution, TLS, htpasswd user
# `AWS` under an ECR host name, its password rotated by the fake ECR with every token, as in
# consumers.sh):
#   1. `docker pull` through dockerd with the config.json the daemon writes (root's, and a user's
#      through DOCKER_CONFIG) and through the credential helper, across rotations; an entry removed
#      or made stale is refused by the registry, and healed by the daemon.
#   2. Swarm: a service created with --with-registry-auth keeps a credential the registry stops
#      accepting; with [swarm] on, the daemon gives it each new token: a new task (scale up) is then
#      pulled with a credential the registry accepts (its access log: 401 before, 200 after), the
#      running task is not restarted, one update per rotation, and a service on another registry is
#      never touched.
#
# Everything runs in a private network and mount namespace (loopback only, a tmpfs on /run, private
# /etc/hosts and certificate directories); dockerd's data, exec root, socket and key live in a temp
# directory. Usage: tests/system/dockerd.sh   (root; after `cargo build --workspace`)
set -euo pipefail
cd "$(dirname "$0")/../.."

step() { echo "== dockerd: $*"; }
fail() { echo "FAILED dockerd test: $*" >&2; [ -n "${DEBUG_DIR:-}" ] && cp -r "$work"/*.log "$DEBUG_DIR"/ 2>/dev/null; [ -n "${work:-}" ] && tail -n 30 "$work/daemon.log" "$work/dockerd.log" >&2 2>/dev/null; exit 1; }
skip() { echo "SKIPPED dockerd test: $*"; exit 0; }

if [ "${1:-}" != "--inside" ]; then
    [ "$(id -u)" = 0 ] || skip "needs root (namespaces, dockerd, port 443)"
    for c in dockerd docker containerd runc docker-registry openssl unshare ip python3 htpasswd busybox; do
        command -v "$c" >/dev/null || skip "$c is not installed"
    done
    [ -x target/debug/ecr-refresherd ] && [ -x target/debug/fake-aws ] \
        || cargo build --quiet --locked --workspace --bins
    exec unshare --net --mount --propagation private -- "$0" --inside
fi

H=111111111111.dkr.ecr.us-east-1.amazonaws.com
BIN=$PWD/target/debug/ecr-refresherd
FAKE=$PWD/target/debug/fake-aws
work=$(mktemp -d /var/tmp/ecr-refresherd-dockerd.XXXXXX)
pids=()
cleanup() {
    [ -S "$work/docker.sock" ] && docker -H "unix://$work/docker.sock" swarm leave --force >/dev/null 2>&1 || true
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    # dockerd's overlay mounts live in this namespace and go with it; the files stay to remove.
    umount -R "$work/docker" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

step "private namespace: loopback only, a tmpfs on /run, $H is 127.0.0.1"
ip link set lo up
mount -t tmpfs tmpfs /run
printf '127.0.0.1 localhost %s\n' "$H" >"$work/hosts"
mount --bind "$work/hosts" /etc/hosts
mkdir -p /etc/docker "$work/etc-docker/certs.d/$H"
mount --bind "$work/etc-docker" /etc/docker

step "TLS for $H, trusted by dockerd through /etc/docker/certs.d"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=$H" -addext "subjectAltName=DNS:$H" \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cp "$work/cert.pem" "/etc/docker/certs.d/$H/ca.crt"

step "the fake ECR: 8-second tokens, each new password the registry's only AWS password"
"$FAKE" --listen 127.0.0.1:0 --lifetime 8 --htpasswd "$work/htpasswd" >"$work/fake.out" 2>"$work/fake.err" &
pids+=($!)
for _ in $(seq 200); do grep -q '^listening ' "$work/fake.out" 2>/dev/null && break; sleep 0.05; done
endpoint=$(sed -n 's/^listening //p' "$work/fake.out")
[ -n "$endpoint" ] || fail "the fake ECR did not start"

step "the registry (distribution) on $H:443, its access log at info"
bootstrap=bootstrap-$RANDOM$RANDOM
htpasswd -Bbn AWS "$bootstrap" >"$work/htpasswd" 2>/dev/null
cat >"$work/registry.yml" <<YML
version: 0.1
log: {level: info, formatter: json}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: "127.0.0.1:443", tls: {certificate: $work/cert.pem, key: $work/key.pem}}
auth: {htpasswd: {realm: ecr, path: $work/htpasswd}}
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/443) 2>/dev/null && break; sleep 0.1; done

step "dockerd $(dockerd --version | awk '{print $3}' | tr -d ,) with its data, socket and key in the temp dir"
echo "{\"deprecated-key-path\": \"$work/key.json\"}" >"$work/dockerd.json"
dockerd --data-root "$work/docker" --exec-root "$work/exec" --pidfile "$work/docker.pid" \
    -H "unix://$work/docker.sock" --iptables=false --ip-forward=false --ip-masq=false --bridge=none \
    --storage-driver=overlay2 --config-file "$work/dockerd.json" >"$work/dockerd.log" 2>&1 &
pids+=($!)
export DOCKER_HOST="unix://$work/docker.sock"
for _ in $(seq 200); do docker version >/dev/null 2>&1 && break; sleep 0.1; done
docker version >/dev/null 2>&1 || fail "dockerd did not start"

step "a runnable image (busybox) pushed to $H/app:v1 with the bootstrap password"
mkdir -p "$work/rootfs/bin"
cp "$(command -v busybox)" "$work/rootfs/bin/busybox"
ln -s busybox "$work/rootfs/bin/sh"
ln -s busybox "$work/rootfs/bin/sleep"
tar -C "$work/rootfs" -c . | docker import - "$H/app:v1" >/dev/null
mkdir -p "$work/push"
printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$H" "$(printf 'AWS:%s' "$bootstrap" | base64 -w0)" >"$work/push/config.json"
DOCKER_CONFIG="$work/push" docker push -q "$H/app:v1" >/dev/null || fail "cannot push the test image"

step "ecr-refresherd: root's docker config, a user's (through DOCKER_CONFIG), the helper socket"
mkdir -p "$work/root/.docker" "$work/homes/ci/.docker" "$work/helper" "$work/bin"
chown -R 4545:4545 "$work/homes/ci"
ln -s "$BIN" "$work/bin/docker-credential-ecr-refresherd"
printf '{"credHelpers":{"%s":"ecr-refresherd"}}\n' "$H" >"$work/helper/config.json"
config() {
    cat >"$work/config.toml" <<TOML
[daemon]
state_dir = "$work/state"
socket = "$work/ctl.sock"
helper_socket = "$work/helper.sock"
min_interval = "1s"
retry_min = "1s"
[[registry]]
host = "$H"
[[target]]
path = "$work/root/.docker/config.json"
user = "root"
[[target]]
path = "$work/homes/ci/.docker/config.json"
user = "4545"
$1
TOML
}
config ""
env -i PATH=/usr/bin:/bin HOME="$work/root" AWS_EC2_METADATA_DISABLED=true \
    AWS_ACCESS_KEY_ID=FAKEACCESSKEY AWS_SECRET_ACCESS_KEY=fake-secret-key-do-not-use \
    AWS_CONFIG_FILE=/nonexistent AWS_SHARED_CREDENTIALS_FILE=/nonexistent \
    AWS_ENDPOINT_URL_ECR="$endpoint" "$BIN" --config "$work/config.toml" run 2>"$work/daemon.log" &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/homes/ci/.docker/config.json" ] && break; sleep 0.1; done
[ -s "$work/homes/ci/.docker/config.json" ] || fail "the daemon wrote nothing"
ctl() { "$BIN" "$@" --socket "$work/ctl.sock"; }

# `pull WAY`: docker pull through dockerd, with only what that way gives the CLI.
pull() {
    case $1 in
        root) DOCKER_CONFIG="$work/root/.docker" docker pull -q "$H/app:v1" ;;
        user) DOCKER_CONFIG="$work/homes/ci/.docker" docker pull -q "$H/app:v1" ;;
        helper) PATH="$work/bin:$PATH" ECR_REFRESHERD_SOCKET="$work/helper.sock" \
                DOCKER_CONFIG="$work/helper" docker pull -q "$H/app:v1" ;;
    esac >/dev/null 2>"$work/pull.err"
}
token_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["auths"][sys.argv[2]]["auth"])' "$1" "$H"; }

# `registry_saw STATUS`: how many manifest requests for app:v1 the registry answered with STATUS
# (its access log, one combined-format line per request).
registry_saw() {
    grep -cE "\"(GET|HEAD) /v2/app/manifests/v1 HTTP/1.1\" $1 " "$work/registry.log" || true
}

step "docker pull, three ways, across at least 3 rotations"
seen=()
rounds=0
end=$((SECONDS + 30))
while [ $SECONDS -lt $end ] || [ "${#seen[@]}" -lt 4 ]; do
    [ $SECONDS -lt $((end + 30)) ] || fail "only ${#seen[@]} tokens in 60 s"
    t=$(token_of "$work/root/.docker/config.json")
    case " ${seen[*]} " in *" $t "*) ;; *) seen+=("$t") ;; esac
    for way in root user helper; do
        # A pull in the instant between the fake's rotation and the daemon's write may fail once.
        pull $way || { sleep 0.5; pull $way; } || { cat "$work/pull.err"; fail "docker pull ($way)"; }
    done
    rounds=$((rounds + 1))
    sleep 1
done
echo "$rounds rounds of 3 pulls across ${#seen[@]} tokens ($(( ${#seen[@]} - 1 )) rotations)"

step "an entry removed: the registry refuses the pull; the daemon heals the file"
python3 - "$work/root/.docker/config.json" "$H" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); del d["auths"][sys.argv[2]]
json.dump(d, open(sys.argv[1] + ".new", "w"))
PY
cp "$work/root/.docker/config.json" "$work/root-before"
mv "$work/root/.docker/config.json.new" "$work/root/.docker/config.json"
if DOCKER_CONFIG="$work/root/.docker" docker pull -q "$H/app:v1" >/dev/null 2>"$work/pull.err"; then
    # The heal may already have happened: the file must hold the entry again then.
    grep -q "$H" "$work/root/.docker/config.json" || fail "a pull without credentials succeeded"
else
    # dockerd tries https (refused: no credentials), then http (127.0.0.0/8 is an insecure
    # registry by default), and reports the last endpoint's error: the first is in its log.
    grep -qiE "no basic auth credentials|unauthorized|authentication required" "$work/pull.err" "$work/dockerd.log" \
        || { cat "$work/pull.err"; fail "the refused pull does not say why"; }
fi
for _ in $(seq 100); do grep -q "$H" "$work/root/.docker/config.json" && break; sleep 0.1; done
pull root || { cat "$work/pull.err"; fail "no pull after the heal"; }

step "an entry made stale (an older token): refused, then healed"
old=$(token_of "$work/root-before")
for _ in $(seq 200); do [ "$(token_of "$work/root/.docker/config.json")" != "$old" ] && break; sleep 0.1; done
python3 - "$work/root/.docker/config.json" "$H" "$old" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); d["auths"][sys.argv[2]]["auth"] = sys.argv[3]
json.dump(d, open(sys.argv[1] + ".new", "w"))
PY
mkdir -p "$work/stale"
cp "$work/root/.docker/config.json.new" "$work/stale/config.json"
mv "$work/root/.docker/config.json.new" "$work/root/.docker/config.json"
# A copy the daemon does not keep: the registry refuses its old password.
refused=$(registry_saw 401)
if DOCKER_CONFIG="$work/stale" docker pull -q "$H/app:v1" >/dev/null 2>&1; then fail "a pull with a stale token succeeded"; fi
[ "$(registry_saw 401)" -gt "$refused" ] || fail "the registry did not refuse the stale token"
for _ in $(seq 100); do [ "$(token_of "$work/root/.docker/config.json")" != "$old" ] && break; sleep 0.1; done
[ "$(token_of "$work/root/.docker/config.json")" != "$old" ] || fail "the stale entry was not healed"
pull root || { cat "$work/pull.err"; fail "no pull after the stale entry was healed"; }
echo "removed and stale entries healed; pulls work again"

# ---------------------------------------------------------------------------------------------
step "swarm: init; a service created --with-registry-auth, and one on another registry"
docker swarm init --advertise-addr 127.0.0.1 >/dev/null || fail "swarm init"
DOCKER_CONFIG="$work/root/.docker" docker service create -q --detach --with-registry-auth --no-resolve-image --name app \
    --replicas 1 "$H/app:v1" sleep 100000 >/dev/null || fail "service create"
docker service create -q --detach --no-resolve-image --name other --replicas 0 localhost:5999/other:v1 sleep 1 >/dev/null \
    || fail "service create (other)"
other_version=$(docker service inspect -f '{{.Version.Index}}' other)
for _ in $(seq 100); do [ "$(docker ps -q --filter label=com.docker.swarm.service.name=app | wc -l)" = 1 ] && break; sleep 0.2; done
first=$(docker ps -q --filter label=com.docker.swarm.service.name=app)
[ -n "$first" ] || fail "the service's task is not running"

step "the token the service holds expires (rotation): a new task's pull is refused (401)"
t0=$(token_of "$work/root/.docker/config.json")
for _ in $(seq 200); do [ "$(token_of "$work/root/.docker/config.json")" != "$t0" ] && break; sleep 0.1; done
refused0=$(registry_saw 401)
docker service scale -d app=2 >/dev/null
for _ in $(seq 150); do [ "$(registry_saw 401)" -gt "$refused0" ] && break; sleep 0.2; done
[ "$(registry_saw 401)" -gt "$refused0" ] || fail "the registry never refused the stale service credential"
echo "the registry refused the new task's stale credential ($(registry_saw 401) refusals)"

step "[swarm] on (reload): the daemon gives the service the current token, once per rotation"
config "[swarm]
enabled = true
socket = \"$work/docker.sock\"
check_every = \"1s\""
ctl reload >/dev/null || fail "reload"
updates() { ctl status --json | python3 -c 'import json,sys; s=json.load(sys.stdin).get("swarm") or {}; print(sum(x["updates"] for x in s.get("services",[]) if x["name"]=="app"))'; }
for _ in $(seq 100); do [ "$(updates)" -ge 1 ] && break; sleep 0.2; done
[ "$(updates)" -ge 1 ] || { ctl status; fail "the daemon never updated the service"; }
tokens=()
ok0=$(registry_saw 200)
docker service scale -d app=3 >/dev/null
for _ in $(seq 150); do [ "$(registry_saw 200)" -gt "$ok0" ] && break; sleep 0.2; done
[ "$(registry_saw 200)" -gt "$ok0" ] || fail "the new task's pull was not accepted after the update"
echo "after the update, the registry accepted the new task's credential"

step "one update per rotation over 3 rotations; the running task untouched; the other service never updated"
# One status snapshot: the registry's token expiry, the expiry of the credential the service
# holds, and its update count. Each rotation must bring exactly one update: the count never runs
# ahead of the tokens seen, and catches up with each.
snap() {
    ctl status --json | python3 -c '
import json, sys
s = json.load(sys.stdin)
svc = [x for x in (s.get("swarm") or {}).get("services", []) if x["name"] == "app"]
print(s["registries"][0]["expires_at"], svc[0]["credential_expires_at"] if svc else "-", svc[0]["updates"] if svc else 0)'
}
settled() { # waits until the service holds the current token; prints "EXPIRY UPDATES"
    for _ in $(seq 100); do
        read -r e c u < <(snap)
        [ "$e" = "$c" ] && { echo "$e $u"; return 0; }
        sleep 0.1
    done
    return 1
}
read -r e0 u0 < <(settled) || fail "the service never got the current token"
expiries=("$e0")
while [ "${#expiries[@]}" -lt 4 ]; do
    read -r e c u < <(snap)
    case " ${expiries[*]} " in *" $e "*) ;; *) expiries+=("$e") ;; esac
    [ $((u - u0)) -le $((${#expiries[@]} - 1)) ] || fail "$((u - u0)) updates for $((${#expiries[@]} - 1)) rotations"
    sleep 0.1
done
read -r e1 u1 < <(settled) || fail "the service never got the last token"
case " ${expiries[*]} " in *" $e1 "*) ;; *) expiries+=("$e1") ;; esac
rotations=$((${#expiries[@]} - 1))
[ $((u1 - u0)) = "$rotations" ] || fail "$((u1 - u0)) updates over $rotations rotations"
echo "$rotations rotations, $rotations updates"
docker ps -q --no-trunc --filter label=com.docker.swarm.service.name=app | grep -q "^$first" \
    || fail "the first task's container was replaced"
[ "$(docker service inspect -f '{{.Version.Index}}' other)" = "$other_version" ] || fail "the other service was updated"
ctl status | sed -n '/^swarm/,/^$/p'
ctl metrics | grep -q 'ecr_refresherd_swarm_service_updates_total{service="app",registry="'"$H"'"}' \
    || fail "no swarm metrics"

step "no credential in any output"
tokens=("$(token_of "$work/root/.docker/config.json")")
for f in "$work"/daemon.log "$work"/pull.err "$work"/dockerd.log; do
    for t in "${seen[@]}" "${tokens[@]}"; do
        pw=$(printf %s "$t" | base64 -d | cut -d: -f2-)
        if grep -qF -- "$pw" "$f"; then fail "a password in $f"; fi
    done
done
ctl status --json >"$work/status.json"
for t in "${tokens[@]}"; do
    pw=$(printf %s "$t" | base64 -d | cut -d: -f2-)
    if grep -qF -- "$pw" "$work/status.json"; then fail "a password in the status"; fi
done
echo "all checks passed"
