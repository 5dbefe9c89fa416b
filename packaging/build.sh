#!/usr/bin/env bash
# Builds the release binary, its man pages, completions and packaged config, and the .deb and .rpm
# into target/packages/. Needs cargo-deb and cargo-generate-rpm (installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
# cargo-deb 3.7 or later: it packages the credential helper's symbolic link ({ dest, link_name }).
deb_version=$(cargo-deb --version 2>/dev/null | awk '{print $2}' || true)
if [ -z "$deb_version" ] || [ "$(printf '3.7.0\n%s\n' "$deb_version" | sort -V | head -n1)" != 3.7.0 ]; then
    cargo install cargo-deb --locked --quiet
fi
command -v cargo-generate-rpm >/dev/null || cargo install cargo-generate-rpm --locked --quiet

cargo build --release --locked -p ecr-refresherd
rm -rf target/assets
cargo run --quiet --locked -p xtask -- assets target/assets
gzip -9n target/assets/man/*.1
mkdir -p target/packages
cargo deb --no-build --locked -p ecr-refresherd --output target/packages/
cargo generate-rpm -p . --output target/packages/
ls -l target/packages/
