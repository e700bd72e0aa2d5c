#!/bin/sh
# Install the named Debian packages that are missing; no network when all are there.
set -eu
missing=""
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "apt-install: missing packages:$missing; run as root or install them" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# One install at a time (parallel `make` runs in several checkouts share dpkg and the guard).
exec 9>/run/lock/ipcjanitor-apt-install
flock 9
# Packages the tests drive (apache2, postgresql) must not start on this host: their daemons
# would make IPC objects in the host's namespace. A policy-rc.d that denies every start, for
# the install only, unless the machine has its own.
guard=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    guard=/usr/sbin/policy-rc.d
fi
trap '[ -z "$guard" ] || rm -f "$guard"' EXIT
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
