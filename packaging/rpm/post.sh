# $1 = 1: first install; 2+: upgrade.
if [ "$1" -eq 1 ]; then
    systemctl --no-reload enable ecr-refresherd.service >/dev/null 2>&1 || :
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
