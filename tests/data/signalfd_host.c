/* A host that reads its signals through signalfd, which needs them blocked in every thread:
 * it records 3 steps (so the agent's threads run), blocks SIGHUP, SIGUSR1 and SIGTERM, sends
 * them to the process, reads them back from the signalfd, records 2 more steps and exits 0.
 * Prints each signal it read, in order; run by tests/exits_e2e.rs with and without
 * VLLM_ENABLE_PROFILING (linked with the library, which stays inert without it). */
#define _GNU_SOURCE
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "vllm_profiler.h"

static void record(int steps) {
    for (int i = 0; i < steps; i++) {
        uint64_t step = vllm_profiler_step_begin(1, 1);
        struct timespec ts = {0, 2000000L};
        nanosleep(&ts, NULL);
        vllm_profiler_step_end(step);
    }
}

int main(void) {
    record(3);
    struct timespec settle = {0, 300000000L};
    nanosleep(&settle, NULL);
    sigset_t set;
    sigemptyset(&set);
    const int sent[3] = {SIGHUP, SIGUSR1, SIGTERM};
    for (int i = 0; i < 3; i++) sigaddset(&set, sent[i]);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0) return 2;
    int fd = signalfd(-1, &set, SFD_CLOEXEC);
    if (fd < 0) return 2;
    for (int i = 0; i < 3; i++) kill(getpid(), sent[i]);
    for (int i = 0; i < 3; i++) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 5000) != 1) {
            printf("timeout\n");
            return 3;
        }
        struct signalfd_siginfo info;
        if (read(fd, &info, sizeof info) != (ssize_t)sizeof info) return 2;
        printf("read %u\n", info.ssi_signo);
    }
    record(2);
    printf("done\n");
    return 0;
}
