#!/usr/bin/env bash
# `ecr-refresherd doctor IMAGE` against real registries: a real registry (distribution, Debian's
# docker-registry) with TLS and htpasswd user `AWS` under an ECR host name, as in consumers.sh,
# and the fake ECR's own registry for what distribution cannot do (ECR's 403 DENIED message, the
# layer redirect to S3, with the storage host reachable or not). Each case checks the step doctor
# names, its exit code, and that no token, password or presigned URL is in any output (text or
# --json).
#
# Everything runs in a private network and mount namespace: only its own loopback, its own
# /etc/hosts, /etc/passwd, resolv.conf and certificate store; the machine's files are untouched.
# Usage: tests/system/doctor.sh   (root; after `cargo build --workspace`)
set -euo pipefail
cd "$(dirname "$0")/../.."

step() { echo "== doctor: $*"; }
fail() { echo "FAILED doctor test: $*" >&2; exit 1; }
skip() { echo "SKIPPED doctor test: $*"; exit 0; }

if [ "${1:-}" != "--inside" ]; then
    [ "$(id -u)" = 0 ] || skip "needs root (namespaces, port 443)"
    for c in docker-registry skopeo openssl unshare ip python3 htpasswd; do
        command -v "$c" >/dev/null || skip "$c is not installed"
    done
    [ -x target/debug/ecr-refresherd ] && [ -x target/debug/fake-aws ] \
        || cargo build --quiet --locked --workspace --bins
    exec unshare --net --mount --propagation private -- "$0" --inside
fi

# H: the real registry. E: the fake ECR's registry (403, S3 redirect). S: its layer storage.
H=111111111111.dkr.ecr.us-east-1.amazonaws.com
E=222222222222.dkr.ecr.us-east-1.amazonaws.com
S=prod-us-east-1-starport-layer-bucket.s3.us-east-1.amazonaws.com
# Resolves nowhere, and refuses connections.
NX=333333333333.dkr.ecr.us-east-1.amazonaws.com
RF=444444444444.dkr.ecr.us-east-1.amazonaws.com
BIN=$PWD/target/debug/ecr-refresherd
FAKE=$PWD/target/debug/fake-aws
work=$(mktemp -d /var/tmp/ecr-refresherd-doctor.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

step "private namespace: loopback, a network that drops every packet, private hosts, passwd and resolver"
ip link set lo up
# 198.51.100.0/24 is routed into loopback, where no address owns it and nothing forwards: SYNs
# vanish, as in a private subnet without a NAT or an S3 gateway endpoint.
ip route add 198.51.100.0/24 dev lo
hosts() { printf '127.0.0.1 localhost %s\n127.0.0.2 %s\n127.0.0.5 %s\n%s %s\n' "$H" "$E" "$RF" "$1" "$S" >"$work/hosts"; }
hosts 127.0.0.3
mount --bind "$work/hosts" /etc/hosts
# No DNS server: a name not in /etc/hosts fails at once.
echo "nameserver 127.0.0.53" >"$work/resolv.conf"
mount --bind "$work/resolv.conf" /etc/resolv.conf
cp /etc/passwd "$work/passwd"
echo "ci:x:4545:4545:ci:$work/homes/ci:/bin/sh" >>"$work/passwd"
mount --bind "$work/passwd" /etc/passwd
mkdir -p "$work/homes/ci/.docker" "$work/run"

step "one CA for every host; the system store is a private bundle with it (SSL_CERT_FILE)"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=doctor test CA" \
    -keyout "$work/ca.key" -out "$work/ca.pem" -addext "basicConstraints=critical,CA:true" \
    -addext "keyUsage=critical,keyCertSign" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=$H" -keyout "$work/key.pem" -out "$work/req.pem" 2>/dev/null
printf 'subjectAltName=DNS:%s,DNS:%s,DNS:%s,DNS:%s\nbasicConstraints=CA:false\n' "$H" "$E" "$S" "$RF" >"$work/ext"
openssl x509 -req -in "$work/req.pem" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial -days 1 \
    -extfile "$work/ext" -out "$work/cert.pem" 2>/dev/null
# A second CA nobody trusts, for the certificate case.
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=$H" -addext "subjectAltName=DNS:$H" \
    -keyout "$work/bad-key.pem" -out "$work/bad-cert.pem" 2>/dev/null
export SSL_CERT_FILE="$work/ca.pem"
unset SSL_CERT_DIR
mkdir -p "$work/certs.d/$H"
cp "$work/ca.pem" "$work/certs.d/$H/ca.crt"

step "the fake ECR (its own registry on $E, layer storage on $S; one password for every token)"
"$FAKE" --listen 127.0.0.1:0 --same-password --htpasswd "$work/htpasswd" \
    --registry 127.0.0.2:443 --storage 127.0.0.3:443 --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" \
    --storage-url "https://$S" --repo app:v1 --repo secret:v1 --repo theirs:v1 --repo blocked:v1 \
    --deny-repo secret=identity --deny-repo theirs=resource --deny-repo blocked=explicit-resource \
    >"$work/fake.out" 2>"$work/fake.err" &
pids+=($!)
for _ in $(seq 200); do grep -q '^storage ' "$work/fake.out" 2>/dev/null && break; sleep 0.05; done
endpoint=$(sed -n 's/^listening //p' "$work/fake.out")
[ -n "$endpoint" ] || { cat "$work/fake.err"; fail "the fake ECR did not start"; }

step "the registry (distribution) on $H:443 with TLS and htpasswd; push app:v1"
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
python3 tests/system/oci-image.py "$work/oci"
skopeo copy --quiet --dest-cert-dir "$work/certs.d/$H" --dest-creds "AWS:$bootstrap" \
    "oci:$work/oci:latest" "docker://$H/app:v1" || fail "cannot push the test image"

cat >"$work/config.toml" <<TOML
[daemon]
state_dir = "$work/state"
socket = "$work/ctl.sock"
[[registry]]
host = "$H"
[[registry]]
host = "$E"
[[registry]]
host = "$NX"
[[registry]]
host = "$RF"
[[target]]
path = "$work/root/.docker/config.json"
TOML
mkdir -p "$work/root/.docker"
run() {
    env -i PATH=/usr/bin:/bin HOME="$work/root" SSL_CERT_FILE="$SSL_CERT_FILE" AWS_EC2_METADATA_DISABLED=true \
        AWS_ACCESS_KEY_ID=FAKEACCESSKEY AWS_SECRET_ACCESS_KEY=fake-secret-key-do-not-use \
        AWS_CONFIG_FILE=/nonexistent AWS_SHARED_CREDENTIALS_FILE=/nonexistent \
        AWS_ENDPOINT_URL_ECR="$endpoint" AWS_ENDPOINT_URL_STS="$endpoint" \
        "$BIN" --config "$work/config.toml" --run-dir "$work/run" "$@"
}
run once >"$work/once.log" 2>&1 || { cat "$work/once.log"; fail "once"; }
token=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["auths"][sys.argv[2]]["auth"])' "$work/root/.docker/config.json" "$H")
password=$(printf %s "$token" | base64 -d | cut -d: -f2-)
[ ${#password} -ge 16 ] || fail "no password in the target"

n=0
# `doctor NAME WANT_EXIT WANT_STEP [args...]`: runs doctor (text and --json), checks the exit code,
# the first failing step (none for exit 0), and that no secret is printed.
doctor() {
    local name=$1 want=$2 step=$3 st=0
    shift 3
    n=$((n + 1))
    local out="$work/doctor-$n.txt" js="$work/doctor-$n.json"
    local t0=$SECONDS
    run doctor "$@" >"$out" 2>&1 || st=$?
    [ $((SECONDS - t0)) -le 16 ] || { cat "$out"; fail "$name: took $((SECONDS - t0)) s (bound 15 s)"; }
    run doctor --json "$@" >"$js" 2>"$js.err" || true
    echo "-- $name (exit $st):"
    sed 's/^/   /' "$out"
    [ "$st" = "$want" ] || fail "$name: exit $st, want $want"
    python3 - "$js" "$step" <<'PY' || { cat "$js" "$js.err"; fail "$name: the JSON report"; }
import json, sys
r = json.load(open(sys.argv[1]))
want = None if sys.argv[2] == "-" else sys.argv[2]
assert r["failed_step"] == want, f"failed_step {r['failed_step']!r}, want {want!r}"
assert r["ok"] == (want is None)
PY
    if [ "$step" != - ]; then
        grep -q "fails at step $step\$" "$out" || fail "$name: the text names another step"
    fi
    for secret in "$token" "$password" fake-secret-key-do-not-use "$bootstrap" X-Amz-Signature X-Amz-Credential; do
        if grep -qF -- "$secret" "$out" "$js" "$js.err"; then fail "$name: a secret is in the output"; fi
    done
}
last() { cat "$work/doctor-$n.txt"; }
expect() { last | grep -qF -- "$1" || fail "doctor-$n: no \"$1\" in the output"; }

step "a good pull from the real registry: every step ok, root's entry accepted"
doctor "good pull" 0 - "$H/app:v1"
expect "served by the registry itself"
expect "the registry accepts its entry; written by the daemon, valid until"
expect "the pull of $H/app:v1 would work"

step "a good pull from the fake ECR registry: the layer redirect to S3 and the storage reached"
doctor "good pull via S3" 0 - "$E/app:v1"
expect "to $S (the layer storage)"
expect "$S serves the layer (HTTP 206)"

step "a wrong password: the registry refuses the token (401)"
# The fake writes the htpasswd when its password changes, which --same-password never does again.
cp "$work/htpasswd" "$work/htpasswd.fake"
htpasswd -Bbn AWS "other-$RANDOM$RANDOM" >"$work/htpasswd.new" 2>/dev/null
mv "$work/htpasswd.new" "$work/htpasswd"
doctor "wrong password" 1 manifest "$H/app:v1"
expect "the registry refused the token (HTTP 401"
cp "$work/htpasswd.fake" "$work/htpasswd.new"
mv "$work/htpasswd.new" "$work/htpasswd"

step "an unknown repository and an unknown tag: the 404 step tells them apart"
doctor "unknown repository" 1 manifest "$H/nothing-here:v1"
expect "the repository nothing-here does not exist"
doctor "unknown tag" 1 manifest "$H/app:v9"
expect "the repository has no image \"v9\""

step "404 on the fake ECR: close names from DescribeRepositories and ListImages"
doctor "close repository" 1 manifest "$E/ap:v1"
expect "close repositories: app"
doctor "close tag" 1 manifest "$E/app:v2"
expect "close tags: v1"

step "403 from ECR: its message quoted, the policy named"
doctor "identity policy" 1 manifest "$E/secret:v1"
expect "denied by an IAM (identity) policy (HTTP 403 DENIED: User: arn:aws:iam::"
expect "is not authorized to perform: ecr:BatchGetImage on resource: arn:aws:ecr:us-east-1:222222222222:repository/secret"
doctor "repository policy" 1 manifest "$E/theirs:v1"
expect "denied by the repository policy"
doctor "explicit deny" 1 manifest "$E/blocked:v1"
expect "a Deny statement in the repository policy"

step "the network: a name that does not resolve, a port that refuses, an untrusted certificate"
doctor "no DNS" 1 dns "$NX/app:v1"
expect "$NX does not resolve"
doctor "refused" 1 tcp "$RF/app:v1"
expect "connection refused"
SSL_CERT_FILE="$work/bad-cert.pem" doctor "untrusted certificate" 1 tls "$H/app:v1"
expect "not trusted"

step "everything hangs (ECR, STS and the registry drop every packet): doctor still ends within its bound"
hosts 127.0.0.3
printf '198.51.100.9 %s\n' "$NX" >>"$work/hosts"
endpoint_saved=$endpoint
endpoint=http://198.51.100.8:80
doctor "everything hangs" 1 token "$NX/app:v1"
expect "the ECR API is unreachable"
expect "no answer within 3 s (packets dropped)"
endpoint=$endpoint_saved

step "no S3 route: the storage host drops every packet (no NAT, no S3 gateway endpoint)"
hosts 198.51.100.7
doctor "no S3 endpoint" 1 storage "$E/app:v1"
expect "layers come from $S, which is not reachable"
expect "S3 gateway endpoint (com.amazonaws.us-east-1.s3)"
hosts 127.0.0.3

step "a user whose docker config has a credsStore: the consumer step names it"
printf '{"auths":{"%s":{"auth":"%s"}},"credsStore":"desktop"}\n' "$H" "$token" >"$work/homes/ci/.docker/config.json"
chown -R 4545:4545 "$work/homes/ci"
doctor "credsStore shadows" 1 consumer --user ci "$H/app:v1"
expect "credsStore sends $H to docker-credential-desktop"
printf '{"auths":{"%s":{"auth":"%s"}},"credHelpers":{"%s":"ecr-refresherd"}}\n' "$H" "$token" "$H" >"$work/homes/ci/.docker/config.json"
doctor "our helper" 0 - --user ci "$H/app:v1"
expect "answered from the daemon's memory"

step "bad usage: exit 2"
st=0; run doctor "Not A/Reference" >/dev/null 2>&1 || st=$?
[ "$st" = 2 ] || fail "a bad reference: exit $st, want 2"
st=0; run doctor --user nosuchuser "$H/app:v1" >/dev/null 2>&1 || st=$?
[ "$st" = 2 ] || fail "an unknown user: exit $st, want 2"

echo "all checks passed ($n doctor runs)"
