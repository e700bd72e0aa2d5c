#!/bin/sh
# Install dist/ipcjanitor_*.deb on a fresh Debian 12 root (debootstrap --variant=minbase) and
# check what an operator would: it installs with its Debian dependencies, `ipcjanitor scan`
# runs, the units are where systemd looks, only the timer is enabled, /etc/ipcjanitor holds a
# conffile, the man pages, README, catalog, completions and examples are in place, and
# install-hook writes a drop-in that starts the hook through the packaged static trampoline with
# a clean environment; then `apt remove` warns about the hooks left behind, and `apt purge`
# deletes the drop-ins install-hook wrote and keeps one changed by hand.
set -eu
cd "$(dirname "$0")/.."
deb=$(ls dist/ipcjanitor_*.deb)
pristine=build/debian12-root
root=build/debian12-test
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list)
if [ ! -x "$pristine/usr/bin/apt-get" ]; then
    rm -rf "$pristine"
    debootstrap --variant=minbase bookworm "$pristine" "$mirror" >build/debootstrap.log 2>&1 ||
        { tail -20 build/debootstrap.log; exit 1; }
fi
rm -rf "$root"
cp -a "$pristine" "$root"
cp "$deb" "$root/tmp/ipcjanitor.deb"
cp /etc/resolv.conf "$root/etc/resolv.conf"

fail() { echo "package-test: FAILED: $*" >&2; exit 1; }
hook=/usr/lib/python3/dist-packages/ipcjanitor/ipcjanitor-hook
# No systemd runs in a chroot: after install-hook's refusal to guess, a stand-in answers as
# systemd does for a plain loaded unit, so the drop-in it writes can be checked.
cat > "$root/tmp/systemctl-stand-in" <<'EOF'
#!/bin/sh
[ "$1" = show ] && printf 'LoadState=loaded\nNeedDaemonReload=no\n'
exit 0
EOF
# private mounts, pids and IPC: nothing of this leaks to the host
unshare --mount --pid --fork --ipc sh -eu -c "
    mount -t proc proc '$root/proc'
    mount --bind /dev '$root/dev'
    chroot '$root' apt-get update -qq
    DEBIAN_FRONTEND=noninteractive chroot '$root' apt-get install -y -qq /tmp/ipcjanitor.deb >/dev/null
    chroot '$root' ipcjanitor scan
    chroot '$root' ipcjanitor policy check
    chroot '$root' python3 -c 'from pystemd.dbuslib import DBus; from pystemd.systemd1 import Manager, Unit'
    chroot '$root' dpkg-query -W -f='\${Conffiles}\n' ipcjanitor > '$root/tmp/conffiles'
    printf '[owners.t]\nunit = \"t.service\"\nkeys = [\"0x7a000000\"]\n' > '$root/etc/ipcjanitor/policy.d/t.toml'
    ! chroot '$root' ipcjanitor install-hook t.service 2>'$root/tmp/no-systemd'  # must refuse
    install -m 755 '$root/tmp/systemctl-stand-in' '$root/usr/sbin/systemctl'
    chroot '$root' ipcjanitor install-hook t.service 2>/dev/null
    env -i SERVICE_RESULT=signal LD_PRELOAD=/nonexistent.so PYTHONPATH=/tmp FOO=bar \
        /usr/sbin/chroot '$root' $hook /usr/bin/env 2>/dev/null > '$root/tmp/hook-env'
    env -i SERVICE_RESULT=signal EXIT_CODE=killed EXIT_STATUS=KILL PYTHONPATH=/tmp \
        /usr/sbin/chroot '$root' $hook /usr/bin/ipcjanitor hook --unit=t.service > '$root/tmp/hook-run'
"
for f in lib/systemd/system/ipcjanitor.service lib/systemd/system/ipcjanitor.timer \
         lib/systemd/system/ipcjanitor-clock.service lib/systemd/system/ipcjanitor-clock.timer \
         lib/systemd/system/ipcjanitor-hook.socket lib/systemd/system/ipcjanitor-hook.service \
         usr/share/man/man8/ipcjanitor.8.gz usr/share/man/man5/ipcjanitor.policy.5.gz \
         usr/share/bash-completion/completions/ipcjanitor \
         usr/lib/systemd/catalog/ipcjanitor.catalog \
         usr/share/zsh/vendor-completions/_ipcjanitor \
         usr/share/fish/vendor_completions.d/ipcjanitor.fish \
         usr/share/doc/ipcjanitor/examples/php-ftok.toml \
         usr/share/doc/ipcjanitor/examples/ipcjanitor.rules.yml; do
    [ -f "$root/$f" ] || fail "/$f is missing"
done
# dh_compress gzips a document over 4 kB
[ -f "$root/usr/share/doc/ipcjanitor/README.md.gz" ] || [ -f "$root/usr/share/doc/ipcjanitor/README.md" ] ||
    fail "the README is not in /usr/share/doc/ipcjanitor/"
[ -d "$root/etc/ipcjanitor/policy.d" ] || fail "/etc/ipcjanitor/policy.d was not created"
[ -L "$root/etc/systemd/system/timers.target.wants/ipcjanitor.timer" ] || fail "the timer is not enabled"
[ -L "$root/etc/systemd/system/timers.target.wants/ipcjanitor-clock.timer" ] || fail "the clock recorder's timer is not enabled"
grep -q 'ipcjanitor-clock.timer' "$root/var/lib/dpkg/info/ipcjanitor.postinst" || fail "postinst does not start the clock recorder's timer"
! grep -q 'restart.*ipcjanitor-clock' "$root/var/lib/dpkg/info/ipcjanitor.postinst" || fail "postinst restarts the clock recorder's timer"
[ -L "$root/etc/systemd/system/sockets.target.wants/ipcjanitor-hook.socket" ] || fail "the hook server's socket is not enabled"
! ls "$root"/etc/systemd/system/*.wants/ipcjanitor-hook.service 2>/dev/null || fail "the hook server is enabled (its socket starts it)"
! ls "$root"/etc/systemd/system/*.wants/ipcjanitor.service 2>/dev/null || fail "the oneshot service is enabled"
grep -q '^ /etc/ipcjanitor/policy.toml ' "$root/tmp/conffiles" || fail "/etc/ipcjanitor/policy.toml is not a conffile"
file "$root$hook" | grep -q 'static-pie linked' || fail "$hook is not statically linked"
grep -qx "ExecStopPost=-+$hook /usr/bin/ipcjanitor hook --unit=%n" \
    "$root/etc/systemd/system/t.service.d/ipcjanitor.conf" || fail "install-hook did not write the trampoline's drop-in"
[ "$(cat "$root/tmp/hook-env")" = "$(printf 'SERVICE_RESULT=signal\nPATH=/usr/sbin:/usr/bin:/sbin:/bin')" ] ||
    fail "the trampoline passed on: $(cat "$root/tmp/hook-env")"
grep -q "cannot ask systemd" "$root/tmp/no-systemd" || fail "install-hook without systemd: $(cat "$root/tmp/no-systemd")"
grep -q 'reports SERVICE_RESULT="signal" EXIT_CODE="killed" EXIT_STATUS="KILL"' "$root/tmp/hook-run" || fail "the hook did not run: $(cat "$root/tmp/hook-run")"

# Remove, then purge, as an operator would with two hooked services: t.service's drop-in as
# install-hook wrote it, u.service's changed by hand since. Remove keeps both and warns that
# they now run a trampoline that is gone; purge deletes only the unchanged listed one.
in_root() {
    unshare --mount --pid --fork --ipc sh -eu -c "
        mount -t proc proc '$root/proc'
        mount --bind /dev '$root/dev'
        $1"
}
# postinst indexed the catalog (systemd came in as a dependency): `journalctl -x` has its text
journalctl --root="$root" --list-catalog 2>/dev/null | grep -q '^3b1f8f6a4d2c4e7f9a0b5c6d7e8f9012 ipcjanitor: ' ||
    fail "postinst did not run journalctl --update-catalog"
t_dropin=etc/systemd/system/t.service.d/ipcjanitor.conf
u_dropin=etc/systemd/system/u.service.d/ipcjanitor.conf
printf '[owners.u]\nunit = "u.service"\nkeys = ["0x7a000001"]\n' > "$root/etc/ipcjanitor/policy.d/u.toml"
in_root "chroot '$root' ipcjanitor install-hook u.service 2>/dev/null"
echo '# changed by hand' >> "$root/$u_dropin"
grep -q " /$u_dropin\$" "$root/var/lib/ipcjanitor/dropins" || fail "install-hook did not list /$u_dropin"
in_root "DEBIAN_FRONTEND=noninteractive chroot '$root' apt-get remove -y -qq ipcjanitor > '$root/tmp/remove.out' 2>&1"
[ ! -e "$root$hook" ] || fail "apt remove left $hook"
grep -q "ipcjanitor: warning: t.service is still hooked: /$t_dropin runs $hook, which is gone" "$root/tmp/remove.out" ||
    fail "apt remove did not warn about t.service: $(cat "$root/tmp/remove.out")"
grep -q "ipcjanitor: warning: u.service is still hooked" "$root/tmp/remove.out" ||
    fail "apt remove did not warn about u.service: $(cat "$root/tmp/remove.out")"
[ -f "$root/$t_dropin" ] && [ -f "$root/$u_dropin" ] || fail "apt remove deleted a drop-in (that is purge's)"
[ -f "$root/var/lib/ipcjanitor/dropins" ] || fail "apt remove deleted the list of drop-ins"
! journalctl --root="$root" --list-catalog 2>/dev/null | grep -q '^3b1f8f6a4d2c4e7f9a0b5c6d7e8f9012 ' ||
    fail "apt remove left the catalog's entries in the journal's index"
in_root "DEBIAN_FRONTEND=noninteractive chroot '$root' apt-get purge -y -qq ipcjanitor > '$root/tmp/purge.out' 2>&1"
[ ! -e "$root/$t_dropin" ] || fail "apt purge left /$t_dropin, which install-hook wrote: $(cat "$root/tmp/purge.out")"
[ ! -e "$root/etc/systemd/system/t.service.d" ] || fail "apt purge left the empty t.service.d"
grep -q "ipcjanitor: removed /$t_dropin, which install-hook wrote" "$root/tmp/purge.out" ||
    fail "apt purge did not say what it removed: $(cat "$root/tmp/purge.out")"
grep -q '^# changed by hand$' "$root/$u_dropin" || fail "apt purge deleted /$u_dropin, changed by hand"
grep -q "ipcjanitor: kept /$u_dropin: changed since install-hook wrote it" "$root/tmp/purge.out" ||
    fail "apt purge did not say why it kept /$u_dropin: $(cat "$root/tmp/purge.out")"
grep -q "ipcjanitor: warning: u.service is still hooked" "$root/tmp/purge.out" ||
    fail "apt purge did not warn about the drop-in it kept: $(cat "$root/tmp/purge.out")"
[ ! -e "$root/var/lib/ipcjanitor" ] || fail "apt purge left /var/lib/ipcjanitor"
[ ! -e "$root/etc/ipcjanitor/policy.toml" ] || fail "apt purge left the conffile"
echo "package-test: deb installs on a fresh Debian 12 root and works; remove warns, purge cleans up"
