/*
 * ipcjanitor-hook: start the ExecStopPost= hook with a clean environment.
 *
 * systemd runs `ExecStopPost=-+...` as root but with the service's own Environment=, and has
 * no per-command way to drop it: PYTHONPATH or LD_PRELOAD would choose the code root loads,
 * IPCJANITOR_* the files it reads and writes. `ipcjanitor install-hook` writes
 *
 *     ExecStopPost=-+/PACKAGE/DIR/ipcjanitor-hook /usr/bin/ipcjanitor hook --unit=%n
 *
 * This program is linked statically: no dynamic loader runs for it, so no LD_* variable
 * reaches it (`env -i` is dynamically linked: ld.so would load LD_PRELOAD into env itself,
 * as root). It keeps only what systemd sets for ExecStopPost= commands, sets a fixed PATH,
 * changes to /, sets umask 022 (the service's UMask= reaches ExecStopPost= too: with 0000 the
 * interpreter's bytecode caches and the hook's files would be world-writable), and execs its
 * first argument (an absolute path) with the rest. It allocates
 * nothing and reads nothing but its arguments and the environment it filters.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* JOURNAL_STREAM: the hook compares it with its stdout's and stderr's own device and inode
 * (a forged value names no other file): when they are the journal, it does not repeat there
 * the rows its journal records tell already. */
static const char *const KEPT[] = {
    "SERVICE_RESULT=", "EXIT_CODE=", "EXIT_STATUS=", "INVOCATION_ID=", "JOURNAL_STREAM=",
};
#define N_KEPT (sizeof KEPT / sizeof KEPT[0])

static char FIXED_PATH[] = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";

extern char **environ;

int main(int argc, char *argv[])
{
    char *env[N_KEPT + 2];
    size_t n = 0;

    if (argc < 2 || argv[1][0] != '/') {
        fprintf(stderr,
                "usage: %s /ABSOLUTE/PROGRAM [ARGUMENT...]\n"
                "runs PROGRAM with only SERVICE_RESULT, EXIT_CODE, EXIT_STATUS, "
                "INVOCATION_ID and JOURNAL_STREAM of the environment, PATH=/usr/sbin:/usr/bin:/sbin:/bin, in /, "
                "umask 022\n",
                argc > 0 ? argv[0] : "ipcjanitor-hook");
        return 64;
    }
    for (size_t k = 0; k < N_KEPT; k++) {
        size_t len = strlen(KEPT[k]);
        for (char **e = environ; e && *e; e++) {
            if (strncmp(*e, KEPT[k], len) == 0) { /* the first, as getenv(3) would */
                env[n++] = *e;
                break;
            }
        }
    }
    env[n++] = FIXED_PATH;
    env[n] = NULL;
    if (chdir("/") != 0) {
        fprintf(stderr, "%s: chdir /: %s\n", argv[0], strerror(errno));
        return 71;
    }
    umask(022);
    execve(argv[1], argv + 1, env);
    fprintf(stderr, "%s: cannot execute %s: %s\n", argv[0], argv[1], strerror(errno));
    return errno == ENOENT ? 127 : 126;
}
