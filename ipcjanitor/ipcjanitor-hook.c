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
 *
 * A `hook` command line is first offered to the hook server (ipcjanitor/hook/serve.py,
 * started by ipcjanitor-hook.socket where that is enabled): one message on SOCKET_PATH with
 * the program, the arguments and the kept environment, and this program's stdout and stderr
 * passed along; the server answers "A" at once, then "N" (not served there), or "X<status>\n"
 * (exit with it) followed by what the hook printed ("O<length>\n" and stdout's bytes,
 * "E<length>\n" and stderr's: written here, to this program's own stdout and stderr; an
 * answer cut short after the status loses output, never runs the hook twice). No socket,
 * no "A" within ASK_WAIT_MS, no status within RUN_WAIT_MS, or
 * anything unexpected: the hook is exec'd here, as without a server. The server decides from
 * this process's cgroup (the unit's) and counts this process as no process of the unit, so
 * it must stay alive until the answer: it does.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
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

#define SOCKET_PATH "/run/ipcjanitor-hook.socket"
#define PROTOCOL "ipcjanitor-hook 2"
#define ASK_WAIT_MS 2000   /* for the server's "A": a socket nobody serves never stalls a stop */
#define RUN_WAIT_MS 60000  /* for its status: the hook's lock wait is 5 s, its work ms */
#define MAX_REQUEST 65536

static char request[MAX_REQUEST];

/* Append s and its NUL to request at *len; 0 when it does not fit. */
static int put(size_t *len, const char *s)
{
    size_t n = strlen(s) + 1;

    if (n > sizeof request - *len)
        return 0;
    memcpy(request + *len, s, n);
    *len += n;
    return 1;
}

/* One byte from fd within ms milliseconds; -1 on timeout, error or end of stream. */
static int byte_within(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    unsigned char c;

    if (poll(&p, 1, ms) != 1 || read(fd, &c, 1) != 1)
        return -1;
    return c;
}

/* Digits up to a newline, as a number; -1 for anything else. */
static long number_from(int s)
{
    long v = 0;
    int c, digits = 0;

    while ((c = byte_within(s, RUN_WAIT_MS)) >= '0' && c <= '9' && digits < 9) {
        v = v * 10 + (c - '0');
        digits++;
    }
    return c == '\n' && digits > 0 ? v : -1;
}

/* Copy n bytes of the answer to fd (a write error loses the output, as it would the hook's
 * own print; the status still counts); 0 when the answer ends first. */
static int relay(int s, int fd, long n)
{
    while (n > 0) {
        struct pollfd p = {.fd = s, .events = POLLIN};
        size_t want = (size_t)n < sizeof request ? (size_t)n : sizeof request;
        ssize_t got, off = 0;

        if (poll(&p, 1, RUN_WAIT_MS) != 1 || (got = read(s, request, want)) <= 0)
            return 0;
        while (off < got) {
            ssize_t w = write(fd, request + off, (size_t)(got - off));

            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                break;
            off += w;
        }
        n -= got;
    }
    return 1;
}

/* Send the request on s, with fds 1 and 2; 0 on any failure. */
static int send_request(int s, size_t len)
{
    int fds[2] = {1, 2};
    char control[CMSG_SPACE(sizeof fds)];
    struct iovec iov = {.iov_base = request, .iov_len = len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
                         .msg_control = control, .msg_controllen = sizeof control};
    struct cmsghdr *cmsg;

    memset(control, 0, sizeof control);
    cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof fds);
    memcpy(CMSG_DATA(cmsg), fds, sizeof fds);
    return sendmsg(s, &msg, MSG_NOSIGNAL) == (ssize_t)len && shutdown(s, SHUT_WR) == 0;
}

/* The request: PROTOCOL, the program, its arguments, "", the kept environment; 0 if too big. */
static size_t build_request(char *argv[], char *env[])
{
    size_t len = 0;

    if (!put(&len, PROTOCOL) || !put(&len, argv[1]))
        return 0;
    for (char **a = argv + 2; *a; a++)
        if (!put(&len, *a))
            return 0;
    if (!put(&len, ""))
        return 0;
    for (char **e = env; *e; e++)
        if (strncmp(*e, "PATH=", 5) != 0 && !put(&len, *e))
            return 0;
    return len;
}

/* The server's exit status for this hook, its output written here; -1: run it here. */
static int ask_server(char *argv[], char *env[])
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX, .sun_path = SOCKET_PATH};
    size_t len = build_request(argv, env);
    int s, c;
    long n, status;

    if (len == 0 || (s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        return -1;
    if (connect(s, (struct sockaddr *)&addr, sizeof addr) != 0 || !send_request(s, len) ||
        byte_within(s, ASK_WAIT_MS) != 'A')
        goto here;
    if (byte_within(s, RUN_WAIT_MS) != 'X' || (status = number_from(s)) < 0 || status > 255)
        goto here; /* "N", or nothing: not served there */
    /* served: what the hook printed follows; an answer cut short loses the rest of it (as a
     * hook killed while printing would), and never runs the hook a second time */
    signal(SIGPIPE, SIG_IGN); /* a closed stdout: EPIPE, as for the hook's own print */
    while ((c = byte_within(s, RUN_WAIT_MS)) == 'O' || c == 'E')
        if ((n = number_from(s)) < 0 || !relay(s, c == 'O' ? 1 : 2, n))
            break;
    close(s);
    return (int)status;
here:
    close(s);
    return -1;
}

static int is_hook(char *argv[])
{
    for (char **a = argv + 2; *a; a++)
        if (strcmp(*a, "hook") == 0)
            return 1;
    return 0;
}

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
    if (is_hook(argv)) {
        int status = ask_server(argv, env);

        if (status >= 0 && status <= 255)
            return status;
    }
    execve(argv[1], argv + 1, env);
    fprintf(stderr, "%s: cannot execute %s: %s\n", argv[0], argv[1], strerror(errno));
    return errno == ENOENT ? 127 : 126;
}
