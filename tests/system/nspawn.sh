#!/usr/bin/env bash
# System test under a real systemd 252 (as on Amazon Linux 2023): install the .deb into a minimal
# Debian root, boot it with systemd-nspawn, run the fake ECR on the host's loopback, and check the
# hardened unit end to end. Each step is printed. The root file system is built once and cached
# outside the repo. Skips (exit 0, with the reason) only where nspawn cannot run.
#
# Usage: tests/system/nspawn.sh   (after packaging/build.sh; as root)
set -euo pipefail
cd "$(dirname "$0")/../.."

cache=${ECR_REFRESHERD_ROOTFS:-/var/cache/ecr-refresherd-ci/rootfs-bookworm}
H1=111111111111.dkr.ecr.us-east-1.amazonaws.com
H3=111111111111.dkr.ecr.eu-west-1.amazonaws.com
PUBLIC=public.ecr.aws

step() { echo "== system: $*"; }
fail() { echo "FAILED system test: $*" >&2; exit 1; }
skip() { echo "SKIPPED system test: $*"; exit 0; }

[ "$(id -u)" = 0 ] || skip "needs root"
command -v systemd-nspawn >/dev/null || skip "systemd-nspawn is not installed (apt-get install systemd-container)"
command -v debootstrap >/dev/null || skip "debootstrap is not installed"
deb=$(ls target/packages/ecr-refresherd_*.deb 2>/dev/null | head -n1)
rpm_file=$(ls target/packages/ecr-refresherd-*.rpm 2>/dev/null | head -n1)
[ -n "$deb" ] && [ -n "$rpm_file" ] || fail "no packages in target/packages: run packaging/build.sh first"
[ -x target/debug/fake-aws ] || cargo build --quiet --locked -p fake-aws

step "the RPM lists the expected files"
rpm -qip "$rpm_file" | sed -n '1,6p'
rpm_files=$(rpm -qlp "$rpm_file")
for f in /usr/bin/ecr-refresherd /usr/lib/systemd/system/ecr-refresherd.service /etc/ecr-refresherd/config.toml \
    /usr/share/doc/ecr-refresherd/config.example.toml /usr/share/man/man1/ecr-refresherd.1.gz \
    /usr/share/man/man1/ecr-refresherd-status.1.gz /usr/share/bash-completion/completions/ecr-refresherd \
    /usr/share/zsh/site-functions/_ecr-refresherd /usr/share/fish/vendor_completions.d/ecr-refresherd.fish \
    /usr/lib/tmpfiles.d/ecr-refresherd.conf /usr/share/doc/ecr-refresherd/ecr-refresherd-alerts.yml; do
    grep -qx "$f" <<<"$rpm_files" || fail "the RPM lacks $f"
done
rpm -qp --configfiles "$rpm_file" | grep -qx /etc/ecr-refresherd/config.toml || fail "config.toml is not %config in the RPM"
rpm -qp --scripts "$rpm_file" | grep -q 'enable ecr-refresherd.service' || fail "the RPM does not enable the unit"
rpm -qp --scripts "$rpm_file" | grep -q 'systemd-tmpfiles --create ecr-refresherd.conf' || fail "the RPM does not create /run/containers on install"
rpm -qp --scripts "$rpm_file" | grep -q 'ln -sfn ecr-refresherd "$helper"' || fail "the RPM does not make the credential helper link"

step "the .deb lists the expected files"
deb_files=$(dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|')
for f in /usr/bin/ecr-refresherd /usr/lib/systemd/system/ecr-refresherd.service /etc/ecr-refresherd/config.toml \
    /usr/share/doc/ecr-refresherd/config.example.toml /usr/share/man/man1/ecr-refresherd.1.gz \
    /usr/share/bash-completion/completions/ecr-refresherd /usr/share/zsh/vendor-completions/_ecr-refresherd \
    /usr/share/fish/vendor_completions.d/ecr-refresherd.fish /usr/lib/tmpfiles.d/ecr-refresherd.conf \
    /usr/bin/docker-credential-ecr-refresherd /usr/share/doc/ecr-refresherd/ecr-refresherd-alerts.yml; do
    grep -qx "$f" <<<"$deb_files" || fail "the .deb lacks $f"
done
dpkg-deb -c "$deb" | grep -E '^l.* \./usr/bin/docker-credential-ecr-refresherd -> ecr-refresherd$' \
    || fail "the .deb's docker-credential-ecr-refresherd is not a link to ecr-refresherd"
dpkg-deb -I "$deb" postinst 2>/dev/null | grep -q 'systemd-tmpfiles --create ecr-refresherd.conf' || fail "the .deb does not create /run/containers on install"
dpkg-deb -f "$deb" Package Version Depends

if [ ! -x "$cache/usr/lib/systemd/systemd" ]; then
    step "building the Debian root once into $cache"
    rm -rf "$cache.tmp"
    mkdir -p "$(dirname "$cache")"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,procps,man-db,passwd \
        bookworm "$cache.tmp" http://deb.debian.org/debian >"$cache.log" 2>&1 || { tail -20 "$cache.log"; fail "debootstrap"; }
    mv "$cache.tmp" "$cache"
fi

work=$(mktemp -d /var/tmp/ecr-refresherd-system.XXXXXX)
fake_pid=
engine_pid=
nspawn_pid=
cleanup() {
    [ -n "$nspawn_pid" ] && kill "$nspawn_pid" 2>/dev/null && wait "$nspawn_pid" 2>/dev/null
    [ -n "$fake_pid" ] && kill "$fake_pid" 2>/dev/null
    [ -n "$engine_pid" ] && kill "$engine_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# cargo-generate-rpm cannot package a symbolic link: the RPM's scripts make and remove it.
step "the RPM's scripts make the credential helper link on install and remove it on erase"
rpm_root="$work/rpm-root"
cp -a "$cache" "$rpm_root"
helper=/usr/bin/docker-credential-ecr-refresherd
rpm --root "$rpm_root" --initdb
rpm --root "$rpm_root" -i --nodeps "$rpm_file" >"$work/rpm.log" 2>&1 || { cat "$work/rpm.log"; fail "rpm -i"; }
[ "$(readlink "$rpm_root$helper")" = ecr-refresherd ] || fail "rpm -i: $helper is not a link to ecr-refresherd"
chroot "$rpm_root" "$helper" version || fail "the RPM's $helper does not run"
rpm --root "$rpm_root" -U --replacepkgs --nodeps "$rpm_file" >"$work/rpm.log" 2>&1 || { cat "$work/rpm.log"; fail "rpm -U"; }
[ "$(readlink "$rpm_root$helper")" = ecr-refresherd ] || fail "an RPM upgrade removed $helper"
rpm --root "$rpm_root" -e ecr-refresherd >"$work/rpm.log" 2>&1 || { cat "$work/rpm.log"; fail "rpm -e"; }
[ ! -e "$rpm_root$helper" ] && [ ! -L "$rpm_root$helper" ] || fail "rpm -e left $helper"
echo "$helper -> ecr-refresherd after rpm -i and rpm -U, gone after rpm -e"
rm -rf "$rpm_root"

root="$work/root"
cp -a "$cache" "$root"

target/debug/fake-aws --listen 127.0.0.1:0 >"$work/fake.out" 2>"$work/fake.err" &
fake_pid=$!
for _ in $(seq 200); do grep -q '^listening ' "$work/fake.out" 2>/dev/null && break; sleep 0.05; done
endpoint=$(sed -n 's/^listening //p' "$work/fake.out")
[ -n "$endpoint" ] || fail "the fake ECR did not start"
step "fake ECR on the host's loopback: $endpoint"

step "installing the .deb into the root"
chroot "$root" useradd --create-home --shell /bin/sh portainer
cp "$deb" "$root/var/tmp/ecr-refresherd.deb"
chroot "$root" dpkg -i /var/tmp/ecr-refresherd.deb >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -i"; }
# The podman target (/run/containers/0/auth.json, podman's default for root) is in the config only
# when with_podman=yes: the boot runs without it, so nothing of ours but the package's tmpfiles.d
# entry can create /run/containers before the test adds the target.
with_podman=no
write_config() {
    local podman=
    [ "$with_podman" = yes ] && podman='[[target]]
name = "podman"
path = "/run/containers/0/auth.json"'
    cat >"$root/etc/ecr-refresherd/config.toml" <<TOML
[daemon]
retry_min = "1s"
retry_max = "5s"
metrics_file = "/var/lib/prometheus/node-exporter/ecr-refresherd.prom"

[[registry]]
host = "$H1"
[[registry]]
host = "$PUBLIC"
$1
[[target]]
name = "root"
path = "/root/.docker/config.json"
[[target]]
name = "portainer"
path = "/home/portainer/.docker/config.json"
$podman
TOML
}
write_config ""
mkdir -p "$root/etc/systemd/system/ecr-refresherd.service.d"
cat >"$root/etc/systemd/system/ecr-refresherd.service.d/test.conf" <<CONF
[Service]
Environment=AWS_ACCESS_KEY_ID=FAKEACCESSKEY AWS_SECRET_ACCESS_KEY=fake-secret-key-do-not-use
Environment=AWS_ENDPOINT_URL_ECR=$endpoint AWS_ENDPOINT_URL_ECR_PUBLIC=$endpoint AWS_EC2_METADATA_DISABLED=true
WatchdogSec=4s
CONF

step "the package enabled the unit (it starts at the next boot) without starting it"
[ -L "$root/etc/systemd/system/multi-user.target.wants/ecr-refresherd.service" ] || fail "not enabled"
grep -q "deb-systemd-invoke start" "$work/dpkg.log" && fail "started by the package"

# A Docker Engine stand-in on the host, bound into the container at /run/docker.sock: the
# swarm step proves the hardened unit reaches the Engine's socket under a read-only /run.
python3 tests/system/fake-engine.py "$work/engine.sock" "$work/engine.log" &
engine_pid=$!
for _ in $(seq 100); do [ -S "$work/engine.sock" ] && break; sleep 0.05; done
[ -S "$work/engine.sock" ] || fail "the Engine stand-in did not start"

step "booting the root with systemd-nspawn (/run a fresh tmpfs, as on Amazon Linux 2023)"
systemd-nspawn -D "$root" --register=no --keep-unit --boot --machine="ecr-ci-$$" --quiet \
    --bind="$work/engine.sock:/run/docker.sock" >"$work/console.log" 2>&1 &
nspawn_pid=$!
leader=
for _ in $(seq 300); do
    leader=$(pgrep -P "$nspawn_pid" -x systemd 2>/dev/null | head -n1 || true)
    [ -n "$leader" ] && break
    kill -0 "$nspawn_pid" 2>/dev/null || { cat "$work/console.log"; skip "systemd-nspawn cannot boot a container here"; }
    sleep 0.1
done
[ -n "$leader" ] || { cat "$work/console.log"; skip "the container's systemd never appeared"; }
inside() { nsenter --target "$leader" --mount --uts --ipc --net --pid -- "$@"; }
for _ in $(seq 300); do
    state=$(inside systemctl is-system-running 2>/dev/null || true)
    case "$state" in running|degraded) break ;; esac
    sleep 0.1
done
echo "container systemd: $(inside systemctl --version | head -n1), state $state"

step "systemd-analyze verify prints nothing"
out=$(inside systemd-analyze verify /usr/lib/systemd/system/ecr-refresherd.service 2>&1 || true)
[ -z "$out" ] || fail "systemd-analyze verify: $out"

step "enabled, it started at boot"
[ "$(inside systemctl is-enabled ecr-refresherd.service)" = enabled ] || fail "not enabled"
for _ in $(seq 200); do inside systemctl is-active --quiet ecr-refresherd.service && break; sleep 0.1; done
inside systemctl is-active --quiet ecr-refresherd.service || { inside journalctl -u ecr-refresherd --no-pager | tail -30; fail "not started at boot"; }

# /run/containers: the daemon sees /run read-only (ProtectSystem=strict, ReadOnlyPaths=/run; /run is a
# tmpfs of its own here, as on a host: nspawn mounts one, systemd's mount_setup does on a host), and
# ReadWritePaths= binds /run/containers writable only if it exists when the service starts; after a
# boot it does not exist until something creates it. Without that the podman steps fail with EROFS.
podman_file=/run/containers/0/auth.json
check_podman_file() {
    for _ in $(seq 100); do inside grep -q "\"$H1\"" "$podman_file" 2>/dev/null && break; sleep 0.1; done
    inside grep -q "\"$H1\"" "$podman_file" 2>/dev/null || {
        inside ecr-refresherd status || true
        inside journalctl -u ecr-refresherd --no-pager | tail -n 15
        fail "$1: $podman_file was not written"
    }
    got=$(inside stat -c '%U:%G %a' "$podman_file")
    [ "$got" = "root:root 600" ] || fail "$1: $podman_file is $got, want root:root 600"
    echo "$podman_file: $got, has $H1"
}
add_podman_target() {
    with_podman=yes
    write_config ""
    inside systemctl reload ecr-refresherd.service || fail "reload adding the podman target"
}

step "the daemon sees /run read-only but for its own paths"
# mountinfo: field 5 is the mount point, field 6 its options. /run is a tmpfs of its own in the
# container (as on a host), and in the daemon's namespace it must be read-only (ReadOnlyPaths=/run:
# without it systemd 252 leaves /run writable under these Protect* settings).
inside awk '$5 == "/run" { print "container:", $0 }' /proc/1/mountinfo
pid=$(inside systemctl show -p MainPID --value ecr-refresherd.service)
run_opts() { inside awk -v p="$1" '$5 == p { o = $6 } END { print o }' "/proc/$pid/mountinfo"; }
for p in /run /run/containers /run/user /run/ecr-refresherd; do echo "daemon's $p: $(run_opts "$p")"; done
case "$(run_opts /run)" in ro,*) ;; *) fail "/run is not read-only for the daemon" ;; esac
case "$(run_opts /run/containers)" in rw,*) ;; *) fail "/run/containers is not a writable mount for the daemon" ;; esac

step "a podman target added after a boot (/run/containers absent at boot) is written"
# nspawn gives the container a fresh /run tmpfs: nothing is in it at boot but what the boot creates.
inside test ! -e /run/containers/0 || fail "/run/containers/0 exists before the podman target was added"
inside test -d /run/containers || fail "the package's tmpfiles.d entry did not create /run/containers at boot"
echo "/run/containers after boot, created by systemd-tmpfiles-setup: $(inside stat -c '%U:%G %a' /run/containers)"
add_podman_target
check_podman_file "added after a boot"

step "the same when /run/containers is removed while the daemon is stopped"
inside systemctl stop ecr-refresherd.service
with_podman=no
write_config ""
inside rm -rf /run/containers
inside test ! -e /run/containers || fail "/run/containers still exists"
inside systemctl start ecr-refresherd.service || { inside journalctl -u ecr-refresherd --no-pager | tail -30; fail "start without /run/containers"; }
inside systemctl is-active --quiet ecr-refresherd.service || fail "not active after a start without /run/containers"
add_podman_target
check_podman_file "added after a start without /run/containers"
echo "/run/containers: $(inside stat -c '%U:%G %a' /run/containers)"
inside chmod 0700 /run/containers
inside systemctl restart ecr-refresherd.service || fail "restart"
got=$(inside stat -c '%U:%G %a' /run/containers)
[ "$got" = "root:root 700" ] || fail "a start changed an existing /run/containers (as podman makes it, root 0700) to $got"
check_podman_file "after a restart with an existing /run/containers"

step "systemctl start returns only after READY (the first round is done by then)"
inside systemctl stop ecr-refresherd.service
inside rm -f /root/.docker/config.json /home/portainer/.docker/config.json /run/containers/0/auth.json
inside systemctl start ecr-refresherd.service || { inside journalctl -u ecr-refresherd --no-pager | tail -30; fail "start"; }
inside systemctl is-active --quiet ecr-refresherd.service || fail "not active"
for f in /root/.docker/config.json /home/portainer/.docker/config.json /run/containers/0/auth.json; do
    inside grep -q "\"$H1\"" "$f" || fail "$f has no entry right after start"
done

step "files written with the right owner and 0600 under the hardened unit"
check_stat() {
    got=$(inside stat -c '%U:%G %a' "$1")
    [ "$got" = "$2" ] || fail "$1 is $got, want $2"
    echo "$1: $got"
}
check_stat /root/.docker/config.json "root:root 600"
check_stat /home/portainer/.docker/config.json "portainer:portainer 600"
check_stat /home/portainer/.docker "portainer:portainer 700"
check_stat /run/containers/0/auth.json "root:root 600"

step "the metrics file is written under the hardened unit, also when its directory was gone at the start"
prom=/var/lib/prometheus/node-exporter/ecr-refresherd.prom
# Rewrites are at least a second apart: the first may show no token yet.
has_expiry() { inside grep -q "^ecr_refresherd_token_expiry_timestamp_seconds{registry=\"$H1\"} " "$prom"; }
for _ in $(seq 50); do has_expiry && break; sleep 0.2; done
check_stat "$prom" "root:root 644"
has_expiry || { inside cat "$prom"; fail "no token expiry for $H1 in $prom"; }
inside systemctl stop ecr-refresherd.service
inside rm -rf /var/lib/prometheus
inside systemctl start ecr-refresherd.service || { inside journalctl -u ecr-refresherd --no-pager | tail -30; fail "start without the metrics directory"; }
for _ in $(seq 50); do inside test -s "$prom" && break; sleep 0.2; done
inside grep -q '^ecr_refresherd_build_info{version=' "$prom" || fail "no metrics after a start without the metrics directory"
echo "$prom: $(inside stat -c '%U:%G %a' "$prom"), $(inside grep -c '^ecr_refresherd_' "$prom") samples"
inside ecr-refresherd metrics | grep -q '^ecr_refresherd_build_info{version=' || fail "ecr-refresherd metrics"

step "ecr-refresherd status answers"
inside ecr-refresherd status || fail "status exit $?"

step "docker-credential-ecr-refresherd is the package's link and answers root from the daemon's memory"
got=$(inside readlink /usr/bin/docker-credential-ecr-refresherd) || fail "/usr/bin/docker-credential-ecr-refresherd is not a link"
[ "$got" = ecr-refresherd ] || fail "/usr/bin/docker-credential-ecr-refresherd -> $got, want ecr-refresherd"
inside dpkg -S /usr/bin/docker-credential-ecr-refresherd || fail "the link is not the package's"
helper_out=$(inside sh -c "echo $H1 | docker-credential-ecr-refresherd get") || fail "helper get exited $?: $helper_out"
python3 - "$helper_out" "$root/root/.docker/config.json" "$H1" <<'PY' || fail "the helper's answer does not match root's config.json"
import base64, json, sys
out, config, host = json.loads(sys.argv[1]), json.load(open(sys.argv[2])), sys.argv[3]
user, _, password = base64.b64decode(config["auths"][host]["auth"]).decode().partition(":")
if sorted(out) != ["Secret", "ServerURL", "Username"]:
    sys.exit(f"keys {sorted(out)}")
if out["ServerURL"] != host or out["Username"] != user or out["Secret"] != password:
    sys.exit(f"ServerURL {out['ServerURL']!r}, Username {out['Username']!r}, Secret equal: {out['Secret'] == password}")
print(f"get {host}: ServerURL and Username {user!r} as asked, Secret equal to the password in root's config.json")
PY
inside sh -c 'echo https://index.docker.io/v1/ | docker-credential-ecr-refresherd erase' || fail "helper erase exited $?"
echo "erase exited 0"

step "systemctl reload applies a config change, and fails on a bad one"
write_config "[[registry]]
host = \"$H3\""
inside systemctl reload ecr-refresherd.service || fail "reload"
for _ in $(seq 100); do inside grep -q "\"$H3\"" /root/.docker/config.json && break; sleep 0.1; done
inside grep -q "\"$H3\"" /root/.docker/config.json || fail "the reloaded config was not applied"
cp "$root/etc/ecr-refresherd/config.toml" "$work/good.toml"
printf '[[registry]]\nhost = "nope"\n' >>"$root/etc/ecr-refresherd/config.toml"
if inside systemctl reload ecr-refresherd.service 2>"$work/reload.err"; then fail "reload of a bad config succeeded"; fi
echo "systemctl reload of a bad config failed, as it should"
inside systemctl is-active --quiet ecr-refresherd.service || fail "a bad config stopped the daemon"

step "[swarm]: the hardened unit reaches the Engine's socket (/var/run/docker.sock under a read-only /run)"
write_config "[swarm]
enabled = true"
inside systemctl reload ecr-refresherd.service || fail "reload with [swarm]"
swarm_seen() { inside ecr-refresherd status --json | python3 -c 'import json,sys; s=json.load(sys.stdin).get("swarm") or {}; sys.exit(0 if s.get("role") == "none" and s.get("api_version") == "1.41" else 1)'; }
for _ in $(seq 100); do swarm_seen && break; sleep 0.1; done
swarm_seen || { inside ecr-refresherd status; cat "$work/engine.log"; fail "the daemon did not reach the Engine socket"; }
grep -q "^GET /v1.41/info" "$work/engine.log" || fail "the Engine saw no /info"
inside ecr-refresherd status | grep "^swarm" || fail "status shows no swarm line"
write_config ""
inside systemctl reload ecr-refresherd.service || fail "reload without [swarm]"
cp "$work/good.toml" "$root/etc/ecr-refresherd/config.toml"
inside systemctl reload ecr-refresherd.service || fail "reload after the fix"

step "the journal has the daemon's structured lines and no secret"
journal=$(inside journalctl -u ecr-refresherd.service -o json --no-pager)
grep -q '"MESSAGE":"token refreshed"' <<<"$journal" || fail "no 'token refreshed' line"
grep -q '"REGISTRY":' <<<"$journal" || fail "no REGISTRY field"
grep -q '"TARGET_PATH":"/home/portainer/.docker/config.json"' <<<"$journal" || fail "no TARGET_PATH field"
inside journalctl -u ecr-refresherd.service --no-pager | tail -n 8
secrets=$(python3 -c 'import json,sys,urllib.request; print("\n".join(json.load(urllib.request.urlopen(sys.argv[1] + "/_fake/secrets"))))' "$endpoint")
[ -n "$secrets" ] || fail "the fake issued no secret?"
while IFS= read -r s; do
    [ -z "$s" ] && continue
    if grep -qF -- "$s" <<<"$journal"; then fail "a secret is in the journal"; fi
done <<<"$secrets"
echo "no secret among $(wc -l <<<"$secrets") issued ones"

step "a watchdog timeout restarts a daemon that stops pinging"
pid=$(inside systemctl show -p MainPID --value ecr-refresherd.service)
restarts=$(inside systemctl show -p NRestarts --value ecr-refresherd.service)
inside kill -STOP "$pid"
for _ in $(seq 300); do
    now=$(inside systemctl show -p NRestarts --value ecr-refresherd.service)
    [ "$now" -gt "$restarts" ] && break
    sleep 0.1
done
[ "$now" -gt "$restarts" ] || fail "no restart after the watchdog timeout"
for _ in $(seq 300); do inside systemctl is-active --quiet ecr-refresherd.service && break; sleep 0.1; done
new_pid=$(inside systemctl show -p MainPID --value ecr-refresherd.service)
[ "$new_pid" != "$pid" ] && [ "$new_pid" != 0 ] || fail "not running again"
inside journalctl -u ecr-refresherd.service --no-pager | grep -m1 -i watchdog || true
echo "restarted: pid $pid -> $new_pid"

step "systemctl stop is clean"
inside systemctl stop ecr-refresherd.service
! inside systemctl is-active --quiet ecr-refresherd.service || fail "still active"
result=$(inside systemctl show -p Result --value ecr-refresherd.service)
[ "$result" = success ] || fail "Result=$result"
inside test ! -e /run/ecr-refresherd/status.sock || fail "socket left behind"

step "installing the .deb again (upgrade) keeps the edited config"
echo "# edited by the operator" >>"$root/etc/ecr-refresherd/config.toml"
inside dpkg -i /var/tmp/ecr-refresherd.deb >"$work/dpkg2.log" 2>&1 || { cat "$work/dpkg2.log"; fail "second dpkg -i"; }
grep -q "edited by the operator" "$root/etc/ecr-refresherd/config.toml" || fail "the upgrade replaced the edited config"

echo "== system: all checks passed"
