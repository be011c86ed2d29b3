/* Makes every fsync/fdatasync take ENLIST_BENCH_FSYNC_DELAY_US longer (default 2000), to measure
 * group commit on a disk like most servers have, not only on this machine's very fast one.
 * Loaded with LD_PRELOAD by bench/run; never used outside benchmarks. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static void slow_down(void) {
    static long delay_us = -1;
    if (delay_us < 0) {
        const char *configured = getenv("ENLIST_BENCH_FSYNC_DELAY_US");
        delay_us = configured ? atol(configured) : 2000;
    }
    struct timespec pause = { delay_us / 1000000, (delay_us % 1000000) * 1000 };
    nanosleep(&pause, NULL);
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    slow_down();
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    slow_down();
    return real(fd);
}
