# $1 = 0: removal (not an upgrade).
if [ "$1" -eq 0 ]; then
    systemctl --no-reload disable --now ecr-refresherd.service >/dev/null 2>&1 || :
fi
