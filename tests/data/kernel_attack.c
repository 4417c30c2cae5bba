/* Hostile drivers for the kernel tracer (tests/kernels_attack_e2e.rs): the agent preloaded,
 * FAKE_CUPTI_PATH names the fake CUPTI. Every mode prints exactly one line on stdout at the end
 * ("done <counts>"), so that a test can tell the host's own output from anything else.
 * Modes:
 *   names NAME...        one step per name, one 1 us kernel each; argv names (hostile ones)
 *   distinct N           N steps, each one kernel of a distinct name k_<i>
 *   burst THREADS N [MS] THREADS threads, each N launches in one step, then MS ms idle;
 *                        prints launched, written
 *   storm                4 launching threads, 4 threads pausing/resuming; prints launched
 *   prepause             pause/resume 100 times before anything is recorded, then 3 kernels
 *   pausecycle           pause, disable, enable: must stay paused; then resume
 *   cycle K              K times: 5 kernels in a step, disable, enable
 *   finish_exit          5 kernels in a step, vllm_profiler_finish, _exit(0)
 *   exit_now             5 kernels in a step, exit(0) at once
 *   fork                 3 kernels, fork; the child records 2 steps (no kernels), exits;
 *                        the parent launches 3 more after it, waits for it */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vllm_profiler.h"
#include "check.h"
#include "fake_cupti.h"


static void one(const char *name) {
    CHECK(launch(name, 0, 1, 1000, NULL, NULL, 8, 0, 0) != 0, "launch %.40s", name);
}

static void step_of(const char *name, int count) {
    uint64_t step = vllm_profiler_step_begin(1, 1);
    for (int i = 0; i < count; i++) one(name);
    vllm_profiler_step_end(step);
}

static long burst_n;
static volatile int stop_storm;
static long storm_launched[8];

static void *burst_thread(void *arg) {
    (void)arg;
    uint64_t step = vllm_profiler_step_begin(1, 1);
    for (long i = 0; i < burst_n; i++) launch("burst_kernel", 0, 2, 1000, NULL, NULL, 8, 0, 0);
    vllm_profiler_step_end(step);
    return NULL;
}

static void *storm_launcher(void *arg) {
    long *count = arg;
    while (!stop_storm) {
        uint64_t step = vllm_profiler_step_begin(1, 1);
        uint64_t span = vllm_profiler_span_begin("storm.span");
        if (launch("storm_kernel", 0, 3, 1000, NULL, NULL, 8, 0, 0)) (*count)++;
        vllm_profiler_span_end(span);
        vllm_profiler_step_end(step);
    }
    return NULL;
}

static void *storm_pauser(void *arg) {
    (void)arg;
    while (!stop_storm) {
        CHECK(vllm_profiler_kernels_pause() == VLLM_PROFILER_OK, "pause");
        vllm_profiler_kernels_resume();
        /* resume may lose the race to another pauser's subscription: not a failure here */
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (load_fake_cupti() != 0 || argc < 2) {
        fprintf(stderr, "usage: FAKE_CUPTI_PATH=... kernel_attack MODE ...\n");
        return 2;
    }
    const char *mode = argv[1];
    if (strcmp(mode, "names") == 0) {
        wait_until_correlated();
        for (int i = 2; i < argc; i++) step_of(argv[i], 1);
        step_of("last_kernel", 1);
        printf("done %d\n", argc - 2 + 1);
    } else if (strcmp(mode, "distinct") == 0 && argc == 3) {
        wait_until_correlated();
        int n = atoi(argv[2]);
        char name[64];
        for (int i = 0; i < n; i++) {
            snprintf(name, sizeof name, "k_%d", i);
            step_of(name, 1);
        }
        printf("done %d\n", n);
    } else if (strcmp(mode, "burst") == 0 && (argc == 4 || argc == 5)) {
        wait_until_correlated();
        int threads = atoi(argv[2]);
        burst_n = atol(argv[3]);
        pthread_t t[64];
        for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, burst_thread, NULL);
        for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
        if (argc == 5) sleep_ms(atol(argv[4])); /* time for the tracer to drain before exit */
        printf("done %ld %llu\n", threads * burst_n, (unsigned long long)written());
    } else if (strcmp(mode, "storm") == 0) {
        wait_until_correlated();
        pthread_t l[4], p[4];
        for (int i = 0; i < 4; i++) pthread_create(&l[i], NULL, storm_launcher, &storm_launched[i]);
        for (int i = 0; i < 4; i++) pthread_create(&p[i], NULL, storm_pauser, NULL);
        sleep_ms(1500);
        stop_storm = 1;
        for (int i = 0; i < 4; i++) pthread_join(l[i], NULL);
        for (int i = 0; i < 4; i++) pthread_join(p[i], NULL);
        CHECK(vllm_profiler_kernels_resume() == VLLM_PROFILER_OK, "final resume");
        /* The storm saturates the pool and the collector's inbox (records past them are
         * dropped or lost, and counted): let the pipeline drain before the 3 that must land. */
        sleep_ms(1000);
        long total = 0;
        for (int i = 0; i < 4; i++) total += storm_launched[i];
        step_of("after_storm", 3);
        printf("done %ld\n", total);
    } else if (strcmp(mode, "prepause") == 0) {
        for (int i = 0; i < 100; i++) {
            CHECK(vllm_profiler_kernels_pause() == VLLM_PROFILER_OK, "early pause");
            CHECK(vllm_profiler_kernels_resume() == VLLM_PROFILER_OK, "early resume");
        }
        CHECK(vllm_profiler_kernels_resume() == VLLM_PROFILER_OK, "resume without pause");
        wait_until_correlated();
        step_of("after_prepause", 3);
        printf("done 3\n");
    } else if (strcmp(mode, "pausecycle") == 0) {
        wait_until_correlated();
        step_of("before_pause", 2);
        CHECK(vllm_profiler_kernels_pause() == VLLM_PROFILER_OK, "pause");
        CHECK(vllm_profiler_disable() == VLLM_PROFILER_OK, "disable");
        CHECK(vllm_profiler_enable(NULL) == VLLM_PROFILER_OK, "enable");
        /* Still paused: the torch profiler may hold CUPTI now. Give a restarted tracer time. */
        for (int i = 0; i < 50; i++) {
            uint64_t step = vllm_profiler_step_begin(1, 1);
            if (depth(CUSTOM2) != 0) {
                CHECK(0, "context pushed while paused, after a disable/enable (step %d)", i);
                vllm_profiler_step_end(step);
                break;
            }
            vllm_profiler_step_end(step);
            sleep_ms(10);
        }
        int rc = vllm_profiler_kernels_resume();
        if (rc != VLLM_PROFILER_OK) {
            char buf[512] = {0};
            vllm_profiler_last_error(buf, sizeof buf);
            CHECK(0, "resume after pause/disable/enable: %d %s", rc, buf);
        }
        wait_until_correlated();
        step_of("after_resume", 3);
        printf("done 3\n");
    } else if (strcmp(mode, "cycle") == 0 && argc == 3) {
        int k = atoi(argv[2]);
        for (int i = 0; i < k; i++) {
            wait_until_correlated();
            step_of("cycle_kernel", 5);
            CHECK(vllm_profiler_disable() == VLLM_PROFILER_OK, "disable %d", i);
            CHECK(vllm_profiler_enable(NULL) == VLLM_PROFILER_OK, "enable %d", i);
        }
        wait_until_correlated();
        step_of("final_kernel", 5);
        printf("done %d\n", k);
    } else if (strcmp(mode, "finish_exit") == 0) {
        wait_until_correlated();
        step_of("before_exit", 5);
        printf("done 5\n");
        fflush(stdout);
        CHECK(vllm_profiler_finish() == 1, "finish wrote the reports");
        _exit(failures ? 1 : 0);
    } else if (strcmp(mode, "exit_now") == 0) {
        wait_until_correlated();
        step_of("before_exit", 5);
        printf("done 5\n");
        exit(failures ? 1 : 0);
    } else if (strcmp(mode, "fork") == 0) {
        wait_until_correlated();
        step_of("parent_before", 3);
        fflush(stdout);
        pid_t child = fork();
        if (child == 0) {
            alarm(20);
            for (int i = 0; i < 2; i++) {
                uint64_t step = vllm_profiler_step_begin(1, 1);
                sleep_ms(50);
                vllm_profiler_step_end(step);
            }
            sleep_ms(300);
            exit(0);
        }
        step_of("parent_after", 3);
        int status = 0;
        CHECK(waitpid(child, &status, 0) == child, "waitpid");
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
        printf("done %d\n", (int)child);
    } else {
        return 2;
    }
    return failures ? 1 : 0;
}
