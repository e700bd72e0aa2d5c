/* A process whose second thread was cloned without CLONE_FILES (a thread with an fd table of
 * its own from birth, as some runtimes make them) and opens the queue argv[1] ("/q_clone")
 * only there; raw system calls in that thread, which has no TLS of its own. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

static char stack[1 << 16] __attribute__((aligned(16)));

static int holder(void *name) {
	long fd = syscall(SYS_mq_open, (char *)name + 1, O_CREAT | O_RDWR, 0600, NULL);
	if (fd < 0)
		syscall(SYS_write, 1, "failed\n", 7);
	else
		syscall(SYS_write, 1, "ready\n", 6);
	for (;;)
		syscall(SYS_pause);
	return 0;
}

int main(int argc, char **argv) {
	if (argc < 2 || argv[1][0] != '/')
		return 2;
	int flags = CLONE_VM | CLONE_FS | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM;
	if (clone(holder, stack + sizeof stack, flags, argv[1]) < 0)
		return 1;
	for (;;)
		pause();
}
