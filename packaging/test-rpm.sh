#!/bin/sh
# Inspect dist/ipcjanitor-*.rpm: the files, the conffile, the systemd scriptlets, and that the
# payload runs (unpacked, in a private IPC namespace), its hook trampoline static and filtering.
set -eu
cd "$(dirname "$0")/.."
rpm=$(ls dist/ipcjanitor-*.rpm)
fail() { echo "package-test: FAILED: $*" >&2; exit 1; }
files=$(rpm -qpl "$rpm" 2>/dev/null)
for f in /usr/bin/ipcjanitor /usr/lib/systemd/system/ipcjanitor.service \
         /usr/lib/systemd/system/ipcjanitor.timer /usr/lib/systemd/system/ipcjanitor-clock.service \
         /usr/lib/systemd/system/ipcjanitor-clock.timer /usr/share/man/man8/ipcjanitor.8 \
         /usr/share/man/man5/ipcjanitor.policy.5 /usr/share/bash-completion/completions/ipcjanitor \
         /etc/ipcjanitor/policy.toml /etc/ipcjanitor/policy.d \
         '/usr/lib[^/]*/python3[^/]*/[a-z]*-packages/ipcjanitor/ipcjanitor-hook'; do
    printf '%s\n' "$files" | grep -qE "^$f(\.gz)?$" || fail "$f is not in the rpm"  # gzipped where brp-compress runs
done
rpm -qpc "$rpm" 2>/dev/null | grep -qx /etc/ipcjanitor/policy.toml || fail "policy.toml is not %config"
scripts=$(rpm -qp --scripts "$rpm" 2>/dev/null)
printf '%s\n' "$scripts" | grep -q 'preset ipcjanitor.timer ipcjanitor-clock.timer' || fail "%post does not preset the timers"
printf '%s\n' "$scripts" | grep -q 'disable --now ipcjanitor.service ipcjanitor.timer' || fail "%preun does not disable"
printf '%s\n' "$scripts" | grep -q 'try-restart ipcjanitor.timer' || fail "%postun does not restart"
! printf '%s\n' "$scripts" | grep -q 'try-restart.*ipcjanitor-clock' || fail "%postun restarts the clock recorder's timer"
rpm -qp --requires "$rpm" 2>/dev/null | grep -qx python3-pystemd || fail "no python3-pystemd requirement"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && rpm2cpio "$OLDPWD/$rpm" | cpio -idm --quiet)
site=$(ls -d "$tmp"/usr/lib*/python3*/*-packages)
PYTHONPATH=$site unshare --ipc /usr/bin/python3 "$tmp/usr/bin/ipcjanitor" scan >/dev/null || fail "the packaged ipcjanitor does not run"
hook=$site/ipcjanitor/ipcjanitor-hook
file "$hook" | grep -q 'static-pie linked' || fail "ipcjanitor-hook is not statically linked"
[ "$(env -i SERVICE_RESULT=signal LD_PRELOAD=/nonexistent.so FOO=bar "$hook" /usr/bin/env)" = \
  "$(printf 'SERVICE_RESULT=signal\nPATH=/usr/sbin:/usr/bin:/sbin:/bin')" ] || fail "ipcjanitor-hook keeps more than it should"
echo "package-test: rpm has its files, %config, systemd scriptlets, and runs"
