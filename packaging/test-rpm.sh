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
         /usr/lib/systemd/system/ipcjanitor-hook.socket /usr/lib/systemd/system/ipcjanitor-hook.service \
         /usr/share/man/man5/ipcjanitor.policy.5 /usr/share/bash-completion/completions/ipcjanitor \
         /usr/share/zsh/site-functions/_ipcjanitor /usr/share/fish/vendor_completions.d/ipcjanitor.fish \
         /usr/lib/systemd/catalog/ipcjanitor.catalog \
         /etc/ipcjanitor/policy.toml /etc/ipcjanitor/policy.d \
         '/usr/lib[^/]*/python3[^/]*/[a-z]*-packages/ipcjanitor/ipcjanitor-hook'; do
    printf '%s\n' "$files" | grep -qE "^$f(\.gz)?$" || fail "$f is not in the rpm"  # gzipped where brp-compress runs
done
rpm -qpc "$rpm" 2>/dev/null | grep -qx /etc/ipcjanitor/policy.toml || fail "policy.toml is not %config"
scripts=$(rpm -qp --scripts "$rpm" 2>/dev/null)
printf '%s\n' "$scripts" | grep -q 'preset ipcjanitor.timer ipcjanitor-clock.timer ipcjanitor-hook.socket' || fail "%post does not preset the timers and the hook server's socket"
printf '%s\n' "$scripts" | grep -q 'disable --now ipcjanitor.service ipcjanitor.timer' || fail "%preun does not disable"
printf '%s\n' "$scripts" | grep -q 'try-restart ipcjanitor.timer' || fail "%postun does not restart"
! printf '%s\n' "$scripts" | grep -q 'try-restart.*ipcjanitor-clock' || fail "%postun restarts the clock recorder's timer"
rpm -qp --requires "$rpm" 2>/dev/null | grep -qx python3-pystemd || fail "no python3-pystemd requirement"
rpm -qp --requires "$rpm" 2>/dev/null | grep -qx 'python(abi) = 3\.[0-9]*' || fail "no python(abi) requirement"
printf '%s\n' "$files" | grep -qx /usr/share/doc/ipcjanitor/README.md || fail "the README is not in /usr/share/doc/ipcjanitor/"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# %postun on erase ($1 == 0), run against a scratch root as packaging/dropins.sh allows: the
# drop-in install-hook listed goes, the one beside it and an unlisted hook stay, the latter
# named in a warning.
rpm -qp --qf '%{POSTUN}\n' "$rpm" > "$tmp/postun" 2>/dev/null
fake=$tmp/erased
mkdir -p "$fake/etc/systemd/system/t.service.d" "$fake/etc/systemd/system/u.service.d" \
    "$fake/var/lib/ipcjanitor"
dropin='[Service]\nExecStopPost=-+/usr/lib/python3/dist-packages/ipcjanitor/ipcjanitor-hook /usr/bin/ipcjanitor hook --unit=%%n\n'
# shellcheck disable=SC2059
printf "$dropin" > "$fake/etc/systemd/system/t.service.d/ipcjanitor.conf"
# shellcheck disable=SC2059
printf "$dropin" > "$fake/etc/systemd/system/u.service.d/ipcjanitor.conf"
printf '[Service]\nNice=1\n' > "$fake/etc/systemd/system/t.service.d/limits.conf"
echo "$(sha256sum < "$fake/etc/systemd/system/t.service.d/ipcjanitor.conf" | cut -d ' ' -f 1)  /etc/systemd/system/t.service.d/ipcjanitor.conf" \
    > "$fake/var/lib/ipcjanitor/dropins"
DPKG_ROOT=$fake sh -e "$tmp/postun" 0 > "$tmp/erase.out" 2>&1 || fail "%postun failed: $(cat "$tmp/erase.out")"
[ ! -e "$fake/etc/systemd/system/t.service.d/ipcjanitor.conf" ] || fail "%postun left the drop-in install-hook wrote"
[ -f "$fake/etc/systemd/system/t.service.d/limits.conf" ] || fail "%postun removed an unrelated drop-in"
[ -f "$fake/etc/systemd/system/u.service.d/ipcjanitor.conf" ] || fail "%postun removed a drop-in install-hook did not list"
grep -q 'warning: u.service is still hooked' "$tmp/erase.out" || fail "%postun did not warn: $(cat "$tmp/erase.out")"
(cd "$tmp" && rpm2cpio "$OLDPWD/$rpm" | cpio -idm --quiet)
site=$(ls -d "$tmp"/usr/lib*/python3*/*-packages)
PYTHONPATH=$site unshare --ipc /usr/bin/python3 "$tmp/usr/bin/ipcjanitor" scan >/dev/null || fail "the packaged ipcjanitor does not run"
hook=$site/ipcjanitor/ipcjanitor-hook
file "$hook" | grep -q 'static-pie linked' || fail "ipcjanitor-hook is not statically linked"
[ "$(env -i SERVICE_RESULT=signal LD_PRELOAD=/nonexistent.so FOO=bar "$hook" /usr/bin/env)" = \
  "$(printf 'SERVICE_RESULT=signal\nPATH=/usr/sbin:/usr/bin:/sbin:/bin')" ] || fail "ipcjanitor-hook keeps more than it should"
echo "package-test: rpm has its files, %config, systemd scriptlets, cleans up on erase, and runs"
