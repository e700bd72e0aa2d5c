# Maintainer-script functions (POSIX sh) for the hook drop-ins `ipcjanitor install-hook` wrote.
# Put into debian's postrm (debian/rules) and the rpm's postun scriptlet; tests run them with
# DPKG_ROOT set. The list: /var/lib/ipcjanitor/dropins, `SHA256  PATH` per line, written by
# ipcjanitor/hook/dropins.py (which checks the same PATH pattern). No percent sign anywhere:
# rpm expands macros in what the spec includes reads (tests/test_dropins.py holds it to that).

# Name each hooked unit whose drop-in runs a trampoline that is gone: systemd would log
# "Executable ... missing, skipping" at every stop and the service's leaks would come back.
ipcjanitor_warn_dropins() {
    for ipcj_d in "${DPKG_ROOT:-}"/etc/systemd/system/*.service.d/ipcjanitor.conf \
                  "${DPKG_ROOT:-}"/run/systemd/system/*.service.d/ipcjanitor.conf; do
        [ -f "$ipcj_d" ] || continue
        ipcj_exe=$(sed -n -e 's/^ExecStopPost=-+"\([^"]*\)".*/\1/p' -e t \
                          -e 's/^ExecStopPost=-+\([^ ]*\).*/\1/p' "$ipcj_d" | head -n 1)
        case $ipcj_exe in */ipcjanitor-hook) ;; *) continue ;; esac
        [ ! -e "${DPKG_ROOT:-}$ipcj_exe" ] || continue
        ipcj_unit=$(basename "$(dirname "$ipcj_d")" .d)
        echo "ipcjanitor: warning: $ipcj_unit is still hooked: ${ipcj_d#"${DPKG_ROOT:-}"} runs" \
             "$ipcj_exe, which is gone, so systemd skips the hook at every stop and the" \
             "service's IPC leaks are no longer cleaned; install ipcjanitor again, or purge it" \
             "(deletes the drop-ins install-hook wrote), or delete that file" >&2
    done
}

# Delete exactly the listed drop-ins that still hold what install-hook wrote (their SHA-256),
# then the list; reload systemd if it runs and something went.
ipcjanitor_purge_dropins() {
    ipcj_list="${DPKG_ROOT:-}/var/lib/ipcjanitor/dropins"
    [ -f "$ipcj_list" ] && [ ! -L "$ipcj_list" ] || return 0
    ipcj_removed=""
    while read -r ipcj_sum ipcj_path; do
        grep -Eqx '/(etc|run)/systemd/system/[A-Za-z0-9:_.\\@-]+\.service\.d/ipcjanitor\.conf' \
            <<ipcj_end || continue
$ipcj_path
ipcj_end
        ipcj_f="${DPKG_ROOT:-}$ipcj_path"
        [ -f "$ipcj_f" ] && [ ! -L "$ipcj_f" ] || continue
        ipcj_now=$(sha256sum < "$ipcj_f" | cut -d ' ' -f 1)
        if [ "$ipcj_now" = "$ipcj_sum" ]; then
            rm -f "$ipcj_f"
            rmdir "$(dirname "$ipcj_f")" 2>/dev/null || true
            ipcj_removed=yes
            echo "ipcjanitor: removed $ipcj_path, which install-hook wrote"
        else
            echo "ipcjanitor: kept $ipcj_path: changed since install-hook wrote it" >&2
        fi
    done < "$ipcj_list"
    rm -f "$ipcj_list"
    rmdir "$(dirname "$ipcj_list")" 2>/dev/null || true
    if [ -n "$ipcj_removed" ] && [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
    fi
}
