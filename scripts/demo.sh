#!/usr/bin/env bash
# A tour of the daemon with no AWS account: builds, starts the repo's fake ECR on loopback (its
# tokens live 20 s instead of 12 h), runs `ecr-refresherd run` on files in a temp dir and shows
# what it does: status, a deleted file and a `docker logout` healed, a config edit reloaded,
# tokens rotated, a clean stop. Everything lives in the temp dir; every process it starts is
# stopped and reaped on any exit, Ctrl-C included. Linux only (the daemon is).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }
die() {
    printf 'demo failed: %s\n' "$*" >&2
    exit 1
}
now_ns() { date +%s%N; }
# `until_ok SECONDS CMD...`: runs CMD every 50 ms until it succeeds; fails after SECONDS.
until_ok() {
    local end=$(($(now_ns) + $1 * 1000000000))
    shift
    until "$@"; do
        [ "$(now_ns)" -lt "$end" ] || return 1
        sleep 0.05
    done
}
# Whether PID is alive (a zombie that waits to be reaped is not).
running() {
    local st
    st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
    [ "${st%% *}" != Z ]
}
gone() { ! running "$1"; }
# TERM, up to 10 s to exit, then KILL; reaps it either way.
stop() {
    [ -n "$1" ] || return 0
    kill -TERM "$1" 2>/dev/null || true
    until_ok 10 gone "$1" || kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

started=$SECONDS
say "build the daemon and the fake ECR (cargo build -p ecr-refresherd -p fake-aws)"
cargo build --quiet --locked -p ecr-refresherd -p fake-aws --bins
bin=$(cd "${CARGO_TARGET_DIR:-target}/debug" && pwd)
echo "built in $((SECONDS - started)) s"

work=$(mktemp -d "${TMPDIR:-/tmp}/ecr-refresherd-demo.XXXXXX")
fake_pid=
daemon_pid=
cleanup() {
    local code=$?
    # A second Ctrl-C must not cut the cleanup short.
    trap '' INT TERM HUP PIPE
    stop "$daemon_pid"
    stop "$fake_pid"
    cd /
    rm -rf "$work"
    exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
# `scripts/demo.sh | head` closes our stdout: exit through the cleanup, not die of SIGPIPE.
trap 'exit 141' PIPE
cd "$work"
echo "working in $work"

say "a fake ECR on loopback: ECR, ECR Public and STS, tokens that live 20 s"
"$bin/fake-aws" --listen 127.0.0.1:0 --lifetime 20 >fake.out 2>&1 &
fake_pid=$!
until_ok 10 grep -q '^listening ' fake.out || die "the fake ECR did not start: $(cat fake.out)"
endpoint=$(sed -n 's/^listening //p' fake.out)
echo "fake ECR (pid $fake_pid) listening on $endpoint"

# What the daemon and its clients see: the fake's endpoints, dummy static credentials, no
# instance metadata, no AWS config of the user who runs the demo.
sealed=(
    PATH=/usr/bin:/bin HOME="$work/home" NO_COLOR=1
    AWS_EC2_METADATA_DISABLED=true
    AWS_CONFIG_FILE=/nonexistent/config AWS_SHARED_CREDENTIALS_FILE=/nonexistent/credentials
    AWS_ACCESS_KEY_ID=FAKEACCESSKEY AWS_SECRET_ACCESS_KEY=fake-secret-key-do-not-use
    AWS_ENDPOINT_URL_ECR="$endpoint" AWS_ENDPOINT_URL_ECR_PUBLIC="$endpoint"
    AWS_ENDPOINT_URL_STS="$endpoint"
)
erd() { env -i "${sealed[@]}" "$bin/ecr-refresherd" --config "$work/config.toml" "$@"; }
# `show CMD...`: prints the command as a user would type it, then runs it (its exit code shown
# when not 0).
show() {
    printf '$ ecr-refresherd %s\n' "$*"
    local code=0
    erd "$@" || code=$?
    [ "$code" = 0 ] || echo "(exit $code)"
    return "$code"
}
# Auth files with every `auth` value cut to its first 12 characters: the fake's tokens are
# dummies, but a demo shows no whole token either.
masked() { sed -E -e 's/("auth": *")([^"]{12})[^"]*"/\1\2…"/g' -e '$a\' "$@"; }
# `entry FILE HOST`: the masked `auths` entry for HOST in FILE, or nothing.
entry() {
    python3 - "$@" <<'PY' 2>/dev/null
import json, sys
auth = json.load(open(sys.argv[1]))["auths"][sys.argv[2]]["auth"]
print(f'"{sys.argv[2]}": {{"auth": "{auth[:12]}…"}}')
PY
}
# Whether FILE names HOST (a cheap poll; `entry` then shows it).
has() { grep -qF "\"$2\"" "$1" 2>/dev/null; }
# The full value, for comparisons only (never printed).
auth_of() {
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["auths"][sys.argv[2]]["auth"])' "$@" 2>/dev/null
}
# The expiry the daemon reports for HOST (status --json).
expiry_of() {
    erd status --json 2>/dev/null | python3 -c '
import json, sys
for r in json.load(sys.stdin)["registries"]:
    if r["host"] == sys.argv[1]:
        print(r["expires_at"] or "")' "$1"
}

private=123456789012.dkr.ecr.us-east-1.amazonaws.com
private_eu=123456789012.dkr.ecr.eu-west-1.amazonaws.com
public=public.ecr.aws
docker_file=home/.docker/config.json
podman_file=run/containers/0/auth.json

say "a docker config.json before the daemon: somebody's own login and a credential helper"
mkdir -p home/.docker
cat >"$docker_file" <<'JSON'
{
	"auths": {
		"docker.io": {"auth": "ZXhhbXBsZTpub3QtcmVhbA=="}
	},
	"credHelpers": {"gcr.io": "gcloud"}
}
JSON
chmod 600 "$docker_file"
echo "\$ cat $docker_file"
cat "$docker_file"

me=$(id -un 2>/dev/null) || me=$(id -u)
say "the config: two registries, docker's config.json and podman's auth.json"
cat >config.toml <<TOML
[daemon]
socket = "$work/ctl.sock"
state_dir = "$work/state"
# The fake's tokens live 20 s: let the daemon refresh them that often.
min_interval = "1s"

[[registry]]
host = "$private"

[[registry]]
host = "$private_eu"

[[target]]
name = "docker"
path = "$work/$docker_file"
# Whose file it is: the demo's sit under /tmp, where anyone could have made a directory first.
user = "$me"

[[target]]
name = "podman"
path = "$work/$podman_file"
user = "$me"
TOML
echo "\$ cat config.toml"
cat config.toml

say "start the daemon (what systemd runs)"
echo "\$ ecr-refresherd --config config.toml run 2>daemon.log &"
env -i "${sealed[@]}" "$bin/ecr-refresherd" --config "$work/config.toml" run 2>daemon.log &
daemon_pid=$!
echo "daemon pid $daemon_pid"
# Ready: every registry fresh, every target written with every registry (`status` answers
# before the daemon's first round, with no registries yet: wait for the entries themselves).
daemon_up() {
    running "$daemon_pid" || die "the daemon exited: $(cat daemon.log)"
    erd status --json 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
sys.exit(not (s["registries"] and all(r["state"] == "fresh" for r in s["registries"])
              and s["targets"] and all(t["state"] == "ok" for t in s["targets"])))' || return 1
    local f
    for f in "$docker_file" "$podman_file"; do
        has "$f" "$private" && has "$f" "$private_eu" || return 1
    done
}
until_ok 30 daemon_up || die "the daemon did not get its tokens in 30 s: $(cat daemon.log)"
echo "ready: every registry has a token, every file is written"

say "ecr-refresherd status: every registry and auth file"
show status

say "what it wrote: only its own entries; the rest of the file is as it was (tokens cut to 12 characters)"
echo "\$ cat $docker_file"
masked "$docker_file"

say "the daemon heals a deleted file"
echo "\$ rm $docker_file"
t=$(now_ns)
rm "$docker_file"
until_ok 10 has "$docker_file" "$private" || die "$docker_file was not restored"
echo "restored after $((($(now_ns) - t) / 1000000)) ms: $(entry "$docker_file" "$private")"

say "the daemon heals a docker logout (the file rewritten without its entry, as docker does)"
echo "\$ docker logout $private   # simulated: the entry removed, temp file + rename"
python3 - "$docker_file" "$private" <<'PY'
import json, os, sys
path, host = sys.argv[1:]
with open(path) as f:
    d = json.load(f)
del d["auths"][host]
with open(path + ".tmp", "w") as f:
    json.dump(d, f, indent="\t")
os.chmod(path + ".tmp", 0o600)
os.replace(path + ".tmp", path)
PY
t=$(now_ns)
until_ok 10 has "$docker_file" "$private" || die "the $private entry was not healed"
echo "healed after $((($(now_ns) - t) / 1000000)) ms: $(entry "$docker_file" "$private")"

say "edit the config (add ECR Public) and ask the daemon to reload"
echo "\$ printf '\\n[[registry]]\\nhost = \"$public\"\\n' >>config.toml"
printf '\n[[registry]]\nhost = "%s"\n' "$public" >>config.toml
show reload
until_ok 15 has "$docker_file" "$public" || die "no $public entry after the reload"
echo "new entry in $docker_file: $(entry "$docker_file" "$public")"
echo "new entry in $podman_file: $(entry "$podman_file" "$public")"

say "ecr-refresherd status --json | head -n 24: the same, for scripts"
echo "\$ ecr-refresherd status --json | head -n 24"
json=$(erd status --json)
head -n 24 <<<"$json"

say "tokens rotate before they expire: on demand, and on the daemon's own at about half their 20 s"
show refresh "$private"
before=$(expiry_of "$private")
before_auth=$(auth_of "$docker_file" "$private")
echo "waiting for the daemon's own refresh of $private (token expires $before)"
rotated() {
    after=$(expiry_of "$private")
    [ -n "$after" ] && [ "$after" != "$before" ]
}
until_ok 40 rotated || die "the token was not rotated within 40 s"
echo "rotated: token expires $before -> $after"
new_token() { [ "$(auth_of "$docker_file" "$private")" != "$before_auth" ]; }
until_ok 10 new_token || die "$docker_file still holds the old token"
echo "and $docker_file holds the new token: $(entry "$docker_file" "$private")"

say "stop the daemon cleanly (SIGTERM, as systemctl stop does)"
echo "\$ kill -TERM $daemon_pid"
kill -TERM "$daemon_pid"
until_ok 15 gone "$daemon_pid" || die "the daemon did not stop within 15 s"
code=0
wait "$daemon_pid" || code=$?
daemon_pid=
echo "the daemon exited with status $code"
[ "$code" = 0 ] || die "the daemon's exit status was $code: $(tail -n 20 daemon.log)"
echo "its last log lines:"
tail -n 3 daemon.log

say "done in $((SECONDS - started)) s; the temp dir and the fake ECR go now"
