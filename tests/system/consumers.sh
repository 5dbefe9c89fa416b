#!/usr/bin/env bash
# Real consumers: a real registry (distribution, Debian's docker-registry) with TLS and htpasswd user
# `AWS` answers under an ECR host name; the fake ECR rotates that user's password with every token it
# issues; skopeo (with the docker config.json) and podman (with /run/containers/0/auth.json, its
# default for root) pull using only the files the daemon wrote. Pulls keep working across rotations
# and fail with a removed or an outdated entry. A fake Portainer (fake-portainer) holds a Custom
# registry record for the same host: the daemon keeps its password fresh through Portainer's API, and
# skopeo pulls with only the password that record holds, across rotations.
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
    [ -x target/debug/ecr-refresherd ] && [ -x target/debug/fake-aws ] && [ -x target/debug/fake-portainer ] \
        || cargo build --quiet --locked --workspace --bins
    exec unshare --net --mount --propagation private -- "$0" --inside
fi

H=111111111111.dkr.ecr.us-east-1.amazonaws.com
BIN=$PWD/target/debug/ecr-refresherd
FAKE=$PWD/target/debug/fake-aws
FAKE_PORTAINER=$PWD/target/debug/fake-portainer
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

step "the fake Portainer: a Custom record for $H (placeholder password) and an unrelated Docker Hub record"
mkdir -p "$work/portainer"
"$FAKE_PORTAINER" --listen 127.0.0.1:0 --dir "$work/portainer" >"$work/portainer.out" 2>"$work/portainer.err" &
pids+=($!)
for _ in $(seq 200); do grep -q '^listening ' "$work/portainer.out" 2>/dev/null && break; sleep 0.05; done
portainer_url=$(sed -n 's/^listening //p' "$work/portainer.out")
[ -n "$portainer_url" ] || { cat "$work/portainer.err"; fail "the fake Portainer did not start"; }
# `portainer_api METHOD PATH [JSON]`: the fake's control plane (/_fake/...), over HTTPS trusting only
# its CA, never through a proxy.
portainer_api() {
    python3 -c '
import ssl, sys, urllib.request
url, ca, method, path = sys.argv[1:5]
body = sys.argv[5].encode() if len(sys.argv) > 5 else None
ctx = ssl.create_default_context(cafile=ca)
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))
req = urllib.request.Request(url + path, data=body, method=method, headers={"Content-Type": "application/json"})
print(opener.open(req, timeout=10).read().decode())
' "$portainer_url" "$work/portainer/ca.pem" "$@"
}
placeholder=placeholder-$RANDOM$RANDOM
ecr_id=$(portainer_api POST /_fake/records \
    "{\"name\":\"ecr-app\",\"kind\":3,\"url\":\"$H\",\"authentication\":true,\"username\":\"AWS\",\"password\":\"$placeholder\"}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])') || fail "cannot add the Custom record"
hub_password=hub-$RANDOM$RANDOM
hub_id=$(portainer_api POST /_fake/records \
    "{\"name\":\"hub\",\"kind\":6,\"url\":\"docker.io\",\"authentication\":true,\"username\":\"someone\",\"password\":\"$hub_password\"}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])') || fail "cannot add the Docker Hub record"
# The daemon gets a root-owned 0600 copy of the administrator's API key.
install -m 0600 -o root -g root "$work/portainer/admin.key" "$work/portainer.key"
echo "fake Portainer at $portainer_url: record #$ecr_id custom $H, record #$hub_id dockerhub docker.io"
# `portainer_record ID FIELD`: a field of a record as the fake Portainer holds it now.
portainer_record() {
    portainer_api GET /_fake/records |
        python3 -c 'import json,sys; print(next(r[sys.argv[2]] for r in json.load(sys.stdin) if r["id"] == int(sys.argv[1])))' "$1" "$2"
}

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
[[portainer]]
url = "$portainer_url"
api_key_file = "$work/portainer.key"
ca_file = "$work/portainer/ca.pem"
check_every = "1s"
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

# `skopeo_creds PASSWORD`: a pull with only user AWS and this password (an empty authfile, the
# private empty HOME: nothing else can supply credentials).
echo '{"auths":{}}' >"$work/empty-auth.json"
skopeo_creds() {
    skopeo inspect --authfile "$work/empty-auth.json" --creds "AWS:$1" --format '{{.Digest}}' "docker://$H/app:v1" \
        >/dev/null 2>"$work/skopeo.err"
}

step "Portainer's record stays fresh: skopeo pulls with only the password Portainer holds (about every 4 s, for 20 s)"
pws=()
pok=0
end=$((SECONDS + 20))
while [ $SECONDS -lt $end ]; do
    pw=$(portainer_record "$ecr_id" password) || fail "cannot read the fake Portainer's records"
    [ "$pw" != "$placeholder" ] || fail "the daemon never updated Portainer's record #$ecr_id"
    case " ${pws[*]} " in *" $pw "*) ;; *) pws+=("$pw") ;; esac
    # Right at a rotation the registry may already want the next password while the daemon is
    # still putting it into Portainer: one retry with what Portainer holds a moment later.
    if ! skopeo_creds "$pw"; then
        sleep 0.5
        pw=$(portainer_record "$ecr_id" password) || fail "cannot read the fake Portainer's records"
        case " ${pws[*]} " in *" $pw "*) ;; *) pws+=("$pw") ;; esac
        skopeo_creds "$pw" || { cat "$work/skopeo.err"; fail "skopeo with the password of Portainer's record #$ecr_id"; }
    fi
    pok=$((pok + 1))
    sleep 1
done
[ "${#pws[@]}" -ge 3 ] || fail "Portainer's record held only ${#pws[@]} passwords: the daemon did not keep it fresh"
echo "$pok pulls with Portainer's password succeeded across ${#pws[@]} passwords"

step "without the daemon's updates Portainer's record would not work"
if skopeo_creds "$placeholder"; then fail "a pull with the record's placeholder password worked"; fi
grep -qiE "unauthorized|authentication required" "$work/skopeo.err" || { cat "$work/skopeo.err"; fail "unexpected error"; }
echo "the placeholder password is refused: $(grep -oiE "unauthorized[^\"]*|authentication required" "$work/skopeo.err" | head -n1)"
old=$(portainer_record "$ecr_id" password)
for _ in $(seq 200); do [ "$(portainer_record "$ecr_id" password)" != "$old" ] && break; sleep 0.1; done
new=$(portainer_record "$ecr_id" password)
[ "$new" != "$old" ] || fail "Portainer's record did not change for 20 s"
if skopeo_creds "$old"; then fail "a pull with Portainer's outdated password worked"; fi
skopeo_creds "$new" || skopeo_creds "$(portainer_record "$ecr_id" password)" || fail "Portainer's fresh password does not work"
echo "Portainer's password from before the last rotation is refused, the fresh one works"

step "the daemon PUT only record #$ecr_id, as an administrator, never its URL; the Docker Hub record is untouched"
portainer_api GET /_fake/requests >"$work/portainer-requests.json"
python3 - "$work/portainer-requests.json" "$ecr_id" "$hub_id" "$(cat "$work/portainer.key")" <<'PY' || fail "Portainer's request log"
import json, sys
log = json.load(open(sys.argv[1]))
ecr, hub, key = sys.argv[2], sys.argv[3], sys.argv[4]
# The daemon checks every second: the last request or two may still be in flight (status 0).
bad = [r for i, r in enumerate(log)
       if r["auth"] != "api-key" or r["api_key"] != key or r["status"] not in (200, 0) or (r["status"] == 0 and i < len(log) - 2)]
if bad:
    sys.exit(f"requests not made with the administrator's key or not answered 200: {[(r['method'], r['path'], r['status'], r['auth']) for r in bad]}")
puts = [r for r in log if r["method"] == "PUT"]
others = [r["path"] for r in puts if r["path"] != f"/api/registries/{ecr}"]
if others:
    sys.exit(f"PUTs to other records: {others}")
for r in puts:
    body = json.loads(r["body"])
    keys = {k.lower() for k in body}
    if body.get("Authentication") is not True or body.get("Username") != "AWS" or not body.get("Password"):
        sys.exit(f"a PUT body without Authentication true, Username AWS and a Password: keys {sorted(body)}")
    if "url" in keys:
        sys.exit("a PUT body holds the URL")
if len(puts) < 3:
    sys.exit(f"only {len(puts)} PUTs")
gets = sum(r["method"] == "GET" for r in log)
print(f"{len(log)} requests, all with the administrator's API key and answered 200: {len(puts)} PUT /api/registries/{ecr} "
      f"(Authentication true, Username AWS, a Password, no URL), {gets} GET; none to record #{hub}")
PY
[ "$(portainer_record "$hub_id" password)" = "$hub_password" ] || fail "the Docker Hub record's password changed"
[ "$(portainer_record "$hub_id" url)" = docker.io ] || fail "the Docker Hub record's URL changed"
[ "$(portainer_record "$ecr_id" url)" = "$H" ] || fail "the Custom record's URL changed"
echo "record #$hub_id (dockerhub docker.io) keeps its password; both URLs unchanged"
portainer_api GET /_fake/secrets | python3 -c '
import json, sys
log = open(sys.argv[1], errors="replace").read()
leaks = [s for s in json.load(sys.stdin) if s and s in log]
sys.exit(f"{len(leaks)} Portainer secrets in the daemon log" if leaks else 0)
' "$work/daemon.log" || fail "the daemon logged a Portainer secret"
echo "no API key or record password in the daemon's log"

step "ecr-refresherd status shows the fake Portainer and its record"
st=0
"$BIN" status --socket "$work/ctl.sock" >"$work/status.txt" 2>&1 || st=$?
sed -n '/^PORTAINER /,/^config /{/^config /d;/^$/d;p}' "$work/status.txt"
[ "$st" = 0 ] || { cat "$work/status.txt"; fail "status exited $st"; }
grep -qE "^$portainer_url +[^ ]+ +yes +yes " "$work/status.txt" || fail "no reachable Portainer with an admin key in status"
grep -qE "^$portainer_url #$ecr_id +ecr-app +custom +$H " "$work/status.txt" || fail "record #$ecr_id is not in status"

echo "== consumers: all checks passed"
