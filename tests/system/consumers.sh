#!/usr/bin/env bash
# Real consumers: a real registry (distribution, Debian's docker-registry) with TLS and htpasswd user
# `AWS` answers under an ECR host name; the fake ECR rotates that user's password with every token it
# issues; skopeo (with the docker config.json) and podman (with /run/containers/0/auth.json, its
# default for root) pull using only the files the daemon wrote. Pulls keep working across rotations
# and fail with a removed or an outdated entry. A fake Portainer (fake-portainer) holds a Custom
# registry record for the same host: the daemon keeps its password fresh through Portainer's API, and
# skopeo pulls with only the password that record holds, across rotations. skopeo and podman also
# pull with nothing but the docker credential helper (`credHelpers` in their auth file, the
# `docker-credential-ecr-refresherd` link on PATH) answered from the daemon's memory, across
# rotations; `podman login`/`logout` through it succeed and change nothing; a uid without root gets
# nothing from it.
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
    for c in docker-registry skopeo podman openssl unshare ip python3 setpriv; do
        command -v "$c" >/dev/null || skip "$c is not installed"
    done
    [ -x target/debug/ecr-refresherd ] && [ -x target/debug/fake-aws ] && [ -x target/debug/fake-portainer ] \
        || cargo build --quiet --locked --workspace --bins
    exec unshare --net --mount --propagation private -- "$0" --inside
fi

H=111111111111.dkr.ecr.us-east-1.amazonaws.com
# A mirror's name for the same registry: a [[registry]] alias.
M=mirror.consumers.test
BIN=$PWD/target/debug/ecr-refresherd
FAKE=$PWD/target/debug/fake-aws
FAKE_PORTAINER=$PWD/target/debug/fake-portainer
work=$(mktemp -d /var/tmp/ecr-refresherd-consumers.XXXXXX)
# What a uid without root must reach (the helper link, the socket's directory, its own home):
# root's, 0755, beside the private $work.
pub=$(mktemp -d /var/tmp/ecr-refresherd-consumers-pub.XXXXXX)
chmod 0755 "$pub"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work" "$pub"
}
trap cleanup EXIT

step "private network namespace with loopback only; $H and $M are 127.0.0.1 in a private /etc/hosts"
ip link set lo up
printf '127.0.0.1 localhost %s %s\n' "$H" "$M" >"$work/hosts"
mount --bind "$work/hosts" /etc/hosts
mkdir -p "$work/certs.d/$H" "$work/certs.d/$M" "$work/run-containers"
mount -t tmpfs tmpfs /run/containers 2>/dev/null || { mkdir -p /run/containers && mount -t tmpfs tmpfs /run/containers; }
mkdir -p /etc/containers/certs.d
mount --bind "$work/certs.d" /etc/containers/certs.d

step "TLS certificate for $H and $M, trusted by skopeo and podman through certs.d"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=$H" -addext "subjectAltName=DNS:$H,DNS:$M" \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cp "$work/cert.pem" "$work/certs.d/$H/ca.crt"
cp "$work/cert.pem" "$work/certs.d/$M/ca.crt"

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
# The socket's group: the uid-without-root steps use it to get past the socket's mode to the
# daemon itself.
SOCKET_GID=4343
sock="$pub/run/ctl.sock"
cat >"$work/config.toml" <<TOML
[daemon]
state_dir = "$work/state"
socket = "$sock"
socket_group = "$SOCKET_GID"
min_interval = "1s"
retry_min = "1s"
[[registry]]
host = "$H"
aliases = ["$M"]
users = ["4646"]
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

step "the mirror name $M (an alias): the daemon wrote the same credential under it; skopeo and podman pull $M/app:v1 with it"
python3 - "$work/root/.docker/config.json" "$H" "$M" <<'PY' || fail "the alias entry"
import json, sys
auths = json.load(open(sys.argv[1]))["auths"]
if auths.get(sys.argv[3]) != auths.get(sys.argv[2]):
    sys.exit(f"{sys.argv[3]}: {'present' if sys.argv[3] in auths else 'missing'}, not the registry's entry")
PY
mirror_pull() {
    skopeo inspect --authfile "$work/root/.docker/config.json" --format '{{.Digest}}' "docker://$M/app:v1" >/dev/null 2>"$work/skopeo.err" \
        && podman --root /run/containers/proot --runroot /run/containers/prun --storage-driver vfs pull --quiet "$M/app:v1" >/dev/null 2>"$work/podman.err"
}
mirror_pull || { sleep 0.3; mirror_pull; } || { cat "$work/skopeo.err" "$work/podman.err"; fail "a pull under the alias"; }
echo "skopeo inspect and podman pull of $M/app:v1 succeeded with the alias entries"

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
"$BIN" status --socket "$sock" >"$work/status.txt" 2>&1 || st=$?
sed -n '/^PORTAINER /,/^config /{/^config /d;/^$/d;p}' "$work/status.txt"
[ "$st" = 0 ] || { cat "$work/status.txt"; fail "status exited $st"; }
grep -qE "^$portainer_url +[^ ]+ +yes +yes " "$work/status.txt" || fail "no reachable Portainer with an admin key in status"
grep -qE "^$portainer_url #$ecr_id +ecr-app +custom +$H " "$work/status.txt" || fail "record #$ecr_id is not in status"
grep -qE "^ +alias $M " "$work/status.txt" || { cat "$work/status.txt"; fail "the alias is not listed under its registry in status"; }

# The docker credential helper: this executable under docker's name, a link found on PATH (as
# docker, skopeo and podman find `docker-credential-NAME`), asking the daemon on
# ECR_REFRESHERD_SOCKET. From here on, pulls use an auth file with no credentials at all, only
# `credHelpers` naming the helper for $H.
mkdir -p "$pub/bin"
ln -s "$BIN" "$pub/bin/docker-credential-ecr-refresherd"
export ECR_REFRESHERD_SOCKET="$sock"
plain_path=$PATH
export PATH="$pub/bin:$PATH"
printf '{"auths":{},"credHelpers":{"%s":"ecr-refresherd"}}\n' "$H" >"$work/helper-auth.json"
helper_get() { echo "$H" | docker-credential-ecr-refresherd get; }
# `check_helper`: the helper's answer for $H is user AWS and the password of the daemon's current
# token (read from the config.json it writes; once more after a moment if a rotation fell between).
check_helper() {
    local i
    for i in 1 2 3; do
        helper_get >"$work/helper.out" || { cat "$work/helper.out"; fail "helper get exited non-zero"; }
        python3 - "$work/helper.out" "$work/root/.docker/config.json" "$H" >"$work/helper.check" 2>&1 <<'PY' && return 0
import base64, json, sys
out, config, host = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3]
user, _, password = base64.b64decode(config["auths"][host]["auth"]).decode().partition(":")
if sorted(out) != ["Secret", "ServerURL", "Username"] or out["ServerURL"] != host or out["Username"] != user:
    sys.exit(f"keys {sorted(out)}, ServerURL {out.get('ServerURL')!r}, Username {out.get('Username')!r}")
if out["Secret"] != password:
    sys.exit("the Secret is not the password of the daemon's current token")
PY
        sleep 0.5
    done
    cat "$work/helper.check"
    fail "the helper's answer does not match the daemon's current token"
}
helper_secret() { helper_get | python3 -c 'import json,sys; print(json.load(sys.stdin)["Secret"])'; }
podman_cmd() { podman --root /run/containers/proot --runroot /run/containers/prun --storage-driver vfs "$@"; }
# `helper_file_intact WHAT`: the auth file still holds only credHelpers {$H: ecr-refresherd} and no
# auths entry (a login that did not go through the helper writes its password into auths).
helper_file_intact() {
    python3 - "$work/helper-auth.json" "$H" <<'PY' || fail "$1 changed the auth file's meaning"
import json, sys
d, host = json.load(open(sys.argv[1])), sys.argv[2]
if d.get("credHelpers") != {host: "ecr-refresherd"} or d.get("auths"):
    sys.exit(f"auth file now: credHelpers {d.get('credHelpers')}, auths keys {sorted(d.get('auths') or {})}")
PY
}

step "docker-credential-ecr-refresherd (a link to ecr-refresherd on PATH) answers root: user AWS, the daemon's current password"
[ "$(readlink "$(command -v docker-credential-ecr-refresherd)")" = "$BIN" ] || fail "the helper on PATH is not the link"
check_helper
echo "get $H: ServerURL $H, Username AWS, Secret = the password in the daemon's config.json"
docker-credential-ecr-refresherd version

step "skopeo and podman pull with only the credential helper (credHelpers, no auths), across rotations (20 s)"
secrets=()
hok=0
end=$((SECONDS + 20))
while [ $SECONDS -lt $end ]; do
    s=$(helper_secret) || fail "helper get"
    case " ${secrets[*]} " in *" $s "*) ;; *) secrets+=("$s") ;; esac
    # As above: a pull right at a rotation may fail once.
    skopeo_inspect "$work/helper-auth.json" || { sleep 0.3; skopeo_inspect "$work/helper-auth.json"; } \
        || { cat "$work/skopeo.err"; fail "skopeo through the credential helper"; }
    podman_pull "$work/helper-auth.json" || { sleep 0.3; podman_pull "$work/helper-auth.json"; } \
        || { cat "$work/podman.err"; fail "podman through the credential helper"; }
    hok=$((hok + 1))
    sleep 1
done
[ "${#secrets[@]}" -ge 3 ] || fail "the helper gave only ${#secrets[@]} passwords: no rotation seen"
python3 -c '
import json, sys, urllib.request
issued = set(json.load(urllib.request.urlopen(sys.argv[1] + "/_fake/secrets")))
seen = sys.stdin.read().split()
sys.exit(0 if all(s in issued for s in seen) else "the helper gave a password the fake ECR never issued")
' "$endpoint" <<<"${secrets[*]}" || fail "helper passwords"
echo "$hok rounds of skopeo inspect + podman pull through the helper succeeded across ${#secrets[@]} passwords, each one the fake ECR issued"
helper_file_intact "pulling"

step "through the helper alone under the alias: credHelpers {$M: ecr-refresherd}"
printf '{"auths":{},"credHelpers":{"%s":"ecr-refresherd"}}\n' "$M" >"$work/mirror-helper-auth.json"
mirror_helper_pull() {
    skopeo inspect --authfile "$work/mirror-helper-auth.json" --format '{{.Digest}}' "docker://$M/app:v1" >/dev/null 2>"$work/skopeo.err"
}
mirror_helper_pull || { sleep 0.3; mirror_helper_pull; } || { cat "$work/skopeo.err"; fail "skopeo through the helper under the alias"; }
[ "$(echo "https://$M" | docker-credential-ecr-refresherd get | python3 -c 'import json,sys; print(json.load(sys.stdin)["Secret"])')" = "$(helper_secret)" ] \
    || { sleep 0.5; [ "$(echo "https://$M" | docker-credential-ecr-refresherd get | python3 -c 'import json,sys; print(json.load(sys.stdin)["Secret"])')" = "$(helper_secret)" ]; } \
    || fail "the helper's answer for the alias is not the registry's"
echo "skopeo inspect $M/app:v1 through the helper succeeded; get https://$M answers the registry's password"

step "without the helper on PATH the same auth file gives nothing (the helper alone supplied the credentials)"
if PATH=$plain_path skopeo_inspect "$work/helper-auth.json"; then fail "a pull worked without the helper"; fi
grep -q "docker-credential-ecr-refresherd" "$work/skopeo.err" || { cat "$work/skopeo.err"; fail "unexpected error without the helper"; }
# (Go's execabs words "not on PATH" as "resolves to executable in current directory".)
echo "skopeo failed: $(grep -oE 'error getting credentials - err: [^`]*' "$work/skopeo.err" | head -n1)"

step "podman login and logout with the helper configured for $H exit 0 and change nothing the helper returns"
# Without a user: podman asks the helper and checks that answer with the registry.
podman_cmd login --authfile "$work/helper-auth.json" "$H" </dev/null >"$work/login.out" 2>&1 \
    || { sleep 0.5; podman_cmd login --authfile "$work/helper-auth.json" "$H" </dev/null >"$work/login.out" 2>&1; } \
    || { cat "$work/login.out"; fail "podman login with the helper's credentials"; }
grep -q "Existing credentials are valid" "$work/login.out" || { cat "$work/login.out"; fail "podman login did not use the helper's credentials"; }
echo "podman login $H: $(grep -m1 'Existing credentials are valid' "$work/login.out")"
[ "$(podman_cmd login --authfile "$work/helper-auth.json" --get-login "$H")" = AWS ] || fail "podman login --get-login is not AWS"
# With a user and password (checked with the registry first): podman stores them through the
# helper, whose store accepts and keeps nothing.
login_store() {
    helper_secret | podman_cmd login --verbose --authfile "$work/helper-auth.json" -u AWS --password-stdin "$H" >"$work/login.out" 2>&1
}
login_store || { sleep 0.5; login_store; } || { cat "$work/login.out"; fail "podman login -u AWS --password-stdin"; }
grep -q "Login Succeeded" "$work/login.out" || { cat "$work/login.out"; fail "podman login -u AWS did not succeed"; }
helper_file_intact "podman login -u AWS"
echo "podman login -u AWS $H: $(grep -m1 'Login Succeeded' "$work/login.out") (stored through the helper: the file's auths stay empty)"
check_helper
podman_cmd logout --authfile "$work/helper-auth.json" "$H" >"$work/logout.out" 2>&1 || { cat "$work/logout.out"; fail "podman logout exited non-zero"; }
echo "podman logout $H: $(head -n1 "$work/logout.out")"
helper_file_intact "podman logout"
check_helper
skopeo_inspect "$work/helper-auth.json" || { sleep 0.3; skopeo_inspect "$work/helper-auth.json"; } \
    || { cat "$work/skopeo.err"; fail "skopeo through the helper after podman logout"; }
echo "after login and logout the helper still answers the daemon's current password; the auth file still has only credHelpers; skopeo pulls"

# A uid without root, in its own home, with the same credHelpers auth file and the helper on its PATH.
nr="$pub/nonroot"
mkdir -p "$nr"
cp "$work/helper-auth.json" "$nr/auth.json"
chown -R 4242:4242 "$nr"
# `as_4242 GROUP-OPTION COMMAND...`
as_4242() {
    local groups=$1
    shift
    env -i PATH="$PATH" HOME="$nr" ECR_REFRESHERD_SOCKET="$sock" setpriv --reuid=4242 --regid=4242 $groups -- "$@"
}
nr_skopeo() {
    as_4242 "$1" skopeo inspect --authfile "$nr/auth.json" --format '{{.Digest}}' "docker://$H/app:v1" >/dev/null 2>"$work/skopeo.err"
}
echo "socket: $(stat -c 'uid %u gid %g mode %a' "$sock")"

step "uid 4242 without groups: the socket refuses it; its helper gets nothing and its pull fails"
st=0
echo "$H" | as_4242 --clear-groups docker-credential-ecr-refresherd get >"$work/nr-helper.out" 2>&1 || st=$?
[ "$st" = 1 ] || { cat "$work/nr-helper.out"; fail "the helper as uid 4242 exited $st, want 1"; }
grep -q Secret "$work/nr-helper.out" && fail "uid 4242 got a credential"
echo "helper get as uid 4242 (exit 1): $(head -c 200 "$work/nr-helper.out")"
if nr_skopeo --clear-groups; then fail "uid 4242 pulled with the helper"; fi
echo "skopeo as uid 4242 failed: $(grep -oiE 'unauthorized[^"]*|authentication required|not allowed to ask[^"]*|credentials not found[^"]*' "$work/skopeo.err" | head -n1)"
grep -qiE "unauthorized|authentication required|not allowed to ask ecr-refresherd" "$work/skopeo.err" \
    || { cat "$work/skopeo.err"; fail "unexpected error for uid 4242"; }

step "uid 4242 in the socket's group: the daemon answers, but not found (root only); the registry refuses the pull"
st=0
echo "$H" | as_4242 "--groups=$SOCKET_GID" docker-credential-ecr-refresherd get >"$work/nr-helper.out" 2>&1 || st=$?
[ "$st" = 1 ] && grep -qx "credentials not found in native keychain" "$work/nr-helper.out" \
    || { cat "$work/nr-helper.out"; fail "the helper as uid 4242 in the socket's group: exit $st"; }
echo "helper get as uid 4242 in group $SOCKET_GID (exit 1): $(cat "$work/nr-helper.out")"
if nr_skopeo "--groups=$SOCKET_GID"; then fail "uid 4242 in the socket's group pulled with the helper"; fi
grep -qiE "unauthorized|authentication required" "$work/skopeo.err" || { cat "$work/skopeo.err"; fail "not the registry's refusal"; }
echo "skopeo as uid 4242 refused by the registry: $(grep -oiE "unauthorized[^\"]*|authentication required" "$work/skopeo.err" | head -n1)"
grep -q "credential request denied" "$work/daemon.log" || fail "the daemon did not log the denied request"
echo "daemon log: $(grep -m1 'credential request denied' "$work/daemon.log" | cut -c1-200)"
check_helper
echo "root's helper still answers"

step "uid 4646, granted by users = [\"4646\"], pulls through the helper socket alone; uid 4242 (no grant) there gets nothing"
hsock="$(dirname "$sock")/helper.sock"
echo "helper socket: $(stat -c 'uid %u gid %g mode %a' "$hsock")"
g="$pub/granted"
mkdir -p "$g" "$pub/home-4646" "$pub/home-4242"
chown 4646:4646 "$pub/home-4646"
chown 4242:4242 "$pub/home-4242"
cp "$work/helper-auth.json" "$g/auth.json"
chown -R 4646:4646 "$g"
as_uid() {
    local uid=$1
    shift
    env -i PATH="$PATH" HOME="$pub/home-$uid" ECR_REFRESHERD_SOCKET="$hsock" setpriv --reuid="$uid" --regid="$uid" --clear-groups -- "$@"
}
st=0
echo "$H" | as_uid 4646 docker-credential-ecr-refresherd get >"$work/g-helper.out" 2>&1 || st=$?
[ "$st" = 0 ] && grep -q '"Username":"AWS"' "$work/g-helper.out" \
    || { head -c 300 "$work/g-helper.out"; fail "the granted uid 4646 got no credential (exit $st)"; }
echo "helper get as uid 4646 through the helper socket: exit 0, user AWS"
as_uid 4646 skopeo inspect --authfile "$g/auth.json" --format '{{.Digest}}' "docker://$H/app:v1" >/dev/null 2>"$work/skopeo.err" \
    || { sleep 0.3; as_uid 4646 skopeo inspect --authfile "$g/auth.json" --format '{{.Digest}}' "docker://$H/app:v1" >/dev/null 2>"$work/skopeo.err"; } \
    || { cat "$work/skopeo.err"; fail "skopeo as the granted uid 4646 through the helper socket"; }
echo "skopeo as uid 4646 pulled with only the helper"
if as_uid 4242 skopeo inspect --authfile "$nr/auth.json" --format '{{.Digest}}' "docker://$H/app:v1" >/dev/null 2>"$work/skopeo.err"; then
    fail "uid 4242 pulled through the helper socket without a grant"
fi
grep -qiE "unauthorized|authentication required" "$work/skopeo.err" || { cat "$work/skopeo.err"; fail "not the registry's refusal"; }
echo "skopeo as uid 4242 on the helper socket refused by the registry: $(grep -oiE "unauthorized[^\"]*|authentication required" "$work/skopeo.err" | head -n1)"

python3 -c '
import json, sys, urllib.request
log = open(sys.argv[2], errors="replace").read()
leaks = [s for s in json.load(urllib.request.urlopen(sys.argv[1] + "/_fake/secrets")) if s and s in log]
sys.exit(f"{len(leaks)} issued secrets in the daemon log" if leaks else 0)
' "$endpoint" "$work/daemon.log" || fail "the daemon logged a secret"

echo "== consumers: all checks passed"
