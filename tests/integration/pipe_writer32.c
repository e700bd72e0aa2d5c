/* An i386 program (no libc: gcc -m32 -nostdlib -static) that writes its own memory to fd 1
 * for ever through int $0x80, i.e. with i386 system call numbers (write is 4 there, stat on
 * x86_64). Its stdout is a pipe whose read end only it holds: it blocks there for good. */
static char chunk[4096];

void _start(void)
{
    for (;;) {
        int rc;
        __asm__ volatile("int $0x80" : "=a"(rc) : "a"(4), "b"(1), "c"(chunk), "d"(sizeof chunk)
                         : "memory");
        if (rc < 0)
            break;
    }
    __asm__ volatile("int $0x80" : : "a"(1), "b"(0));
}
