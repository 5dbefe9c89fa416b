# $1 = 1: first install; 2+: upgrade.
# /run/containers now, not only from the next boot (what %tmpfiles_create does).
systemd-tmpfiles --create ecr-refresherd.conf >/dev/null 2>&1 || :
if [ "$1" -eq 1 ]; then
    systemctl --no-reload enable ecr-refresherd.service >/dev/null 2>&1 || :
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
