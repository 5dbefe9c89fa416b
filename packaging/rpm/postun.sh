# $1 >= 1: upgrade: restart the running daemon on the new binary.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -ge 1 ]; then
    systemctl try-restart ecr-refresherd.service >/dev/null 2>&1 || :
fi
# Erase (not an upgrade): remove the credential helper link post.sh made, if it is still ours.
helper=/usr/bin/docker-credential-ecr-refresherd
if [ "$1" -eq 0 ] && [ -L "$helper" ] && [ "$(readlink "$helper")" = ecr-refresherd ]; then
    rm -f "$helper" || :
fi
