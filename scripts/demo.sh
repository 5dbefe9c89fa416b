#!/usr/bin/env bash
# End-to-end demo with no AWS account: starts the repo's fake ECR on loopback, runs
# `ecr-refresherd once` into a temp dir, and shows the auth file it wrote.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet --workspace --bins
bin=${CARGO_TARGET_DIR:-target}/debug
work=$(mktemp -d)
fake_pid=
cleanup() {
    [ -n "$fake_pid" ] && kill "$fake_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

"$bin/fake-aws" --listen 127.0.0.1:0 >"$work/fake.out" &
fake_pid=$!
for _ in $(seq 200); do
    grep -q '^listening ' "$work/fake.out" 2>/dev/null && break
    sleep 0.05
done
endpoint=$(sed -n 's/^listening //p' "$work/fake.out")
[ -n "$endpoint" ] || { echo "the fake ECR did not start" >&2; exit 1; }
echo "fake ECR listening on $endpoint"

mkdir -p "$work/root/.docker"
cat >"$work/root/.docker/config.json" <<'JSON'
{
	"auths": {
		"docker.io": {"auth": "ZXhhbXBsZTpub3QtcmVhbA=="}
	},
	"credHelpers": {"gcr.io": "gcloud"}
}
JSON

cat >"$work/config.toml" <<TOML
[daemon]
state_dir = "$work/state"

[[registry]]
host = "123456789012.dkr.ecr.us-east-1.amazonaws.com"

[[registry]]
host = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"

[[registry]]
host = "public.ecr.aws"

[[target]]
name = "root"
path = "$work/root/.docker/config.json"

[[target]]
name = "podman"
path = "$work/run/containers/0/auth.json"
TOML

echo
echo "\$ ecr-refresherd --config config.toml check"
env -i PATH=/usr/bin:/bin HOME="$work" AWS_EC2_METADATA_DISABLED=true \
    "$bin/ecr-refresherd" --config "$work/config.toml" check || true

echo
echo "\$ ecr-refresherd --config config.toml once"
env -i PATH=/usr/bin:/bin HOME="$work" AWS_EC2_METADATA_DISABLED=true \
    AWS_ACCESS_KEY_ID=FAKEACCESSKEY AWS_SECRET_ACCESS_KEY=fake-secret-key-do-not-use \
    AWS_ENDPOINT_URL_ECR="$endpoint" AWS_ENDPOINT_URL_ECR_PUBLIC="$endpoint" \
    "$bin/ecr-refresherd" --config "$work/config.toml" once

for f in root/.docker/config.json run/containers/0/auth.json; do
    echo
    echo "--- $f ($(stat -c '%U %a' "$work/$f")):"
    cat "$work/$f"
    echo
done
echo
echo "each auth decodes to AWS:<password>, e.g.:"
python3 -c 'import json,sys,base64; d=json.load(open(sys.argv[1])); print(base64.b64decode(d["auths"]["public.ecr.aws"]["auth"]).decode()[:12] + "...")' \
    "$work/run/containers/0/auth.json"
