/* The fake CUPTI's test exports (crates/fake-cupti), for the C drivers of the kernel tests:
 * load_fake_cupti() opens the library FAKE_CUPTI_PATH names (the one the agent loads too) and
 * binds them; wait_until_correlated() records warm-up steps until the agent's tracer pushes a
 * step's context, and returns how many it took. */
#ifndef VLLM_PROFILER_TEST_FAKE_CUPTI_H
#define VLLM_PROFILER_TEST_FAKE_CUPTI_H

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "vllm_profiler.h"

/* CUPTI_EXTERNAL_CORRELATION_KIND_CUSTOM2, the agent's. */
#define CUSTOM2 5

typedef uint32_t (*launch_fn)(const char *, uint32_t, uint32_t, uint64_t, const uint32_t *,
                              const uint32_t *, uint16_t, uint32_t, uint32_t);
typedef uint32_t (*launch_graph_fn)(const char *, uint32_t, uint32_t, uint64_t, uint32_t);
typedef uint32_t (*depth_fn)(uint32_t);
typedef uint64_t (*written_fn)(void);

static launch_fn launch;
static launch_graph_fn launch_graph;
static depth_fn depth;
static written_fn written;

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* 0, or -1 with a line on stderr. */
static int load_fake_cupti(void) {
    const char *path = getenv("FAKE_CUPTI_PATH");
    void *fake = path ? dlopen(path, RTLD_NOW) : NULL;
    if (!fake) {
        fprintf(stderr, "FAKE_CUPTI_PATH must name the fake CUPTI\n");
        return -1;
    }
    launch = (launch_fn)dlsym(fake, "fake_cupti_launch");
    launch_graph = (launch_graph_fn)dlsym(fake, "fake_cupti_launch_graph");
    depth = (depth_fn)dlsym(fake, "fake_cupti_external_depth");
    written = (written_fn)dlsym(fake, "fake_cupti_records_written");
    if (!launch || !launch_graph || !depth || !written) {
        fprintf(stderr, "the fake lacks its test exports\n");
        return -1;
    }
    return 0;
}

static int wait_until_correlated(void) {
    for (int w = 0; w < 1000; w++) {
        uint64_t step = vllm_profiler_step_begin(1, 1);
        int ready = depth(CUSTOM2) == 1;
        vllm_profiler_step_end(step);
        if (ready) return w;
        sleep_ms(10);
    }
    fprintf(stderr, "the tracer never correlated\n");
    exit(1);
}

#endif
