/* Launches fake CUDA kernels through the fake CUPTI (crates/fake-cupti) inside steps and spans
 * of the agent; run under LD_PRELOAD with VLLM_PROFILING_KERNELS=1 by tests/kernels_e2e.rs.
 * FAKE_CUPTI_PATH names the fake, the library the agent loads too.
 * Usage: kernel_launches run N   wait until the tracer correlates (warm-up steps without
 *                                kernels), then N steps of two kernels (one inside span
 *                                "model.layers.0"), one kernel outside every step, and one
 *                                step replaying a CUDA graph of 3 kernels; prints "warmup W"
 *        kernel_launches pause   as run 2, then pauses the tracer, launches 5 kernels in a
 *                                step, resumes, and launches 3 in another; prints "warmup W"
 *        kernel_launches refused 20 steps with one kernel each; the tracer must never
 *                                correlate; prints "warmup 0"
 * On a failed check, one line on stderr and exit status 1. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vllm_profiler.h"
#include "check.h"
#include "fake_cupti.h"


/* One step: a 1 ms kernel inside the span, a 0.5 ms one after it, 2 ms apart. */
static void step_of_two(void) {
    static const uint32_t grid[3] = {2, 3, 4}, block[3] = {128, 1, 1}, wide[3] = {256, 1, 1};
    uint64_t step = vllm_profiler_step_begin(4, 32);
    CHECK(step != 0, "step_begin");
    uint64_t span = vllm_profiler_span_begin("model.layers.0");
    CHECK(depth(CUSTOM2) == 1, "one context pushed in the span");
    CHECK(launch("_Z6kernelPfi", 0, 7, 1000000, grid, block, 32, 1024, 2048) != 0, "launch");
    CHECK(vllm_profiler_span_end(span) == VLLM_PROFILER_OK, "span_end");
    sleep_ms(2);
    CHECK(launch("triton_poi_fused_add_0", 0, 7, 500000, NULL, wide, 16, 0, 0) != 0, "launch");
    CHECK(vllm_profiler_step_end(step) == VLLM_PROFILER_OK, "step_end");
    CHECK(depth(CUSTOM2) == 0, "nothing pushed outside steps");
}

int main(int argc, char **argv) {
    if (load_fake_cupti() != 0 || argc < 2) {
        fprintf(stderr, "usage: FAKE_CUPTI_PATH=... kernel_launches run N|pause|refused\n");
        return 2;
    }
    int warmup = 0;
    if (strcmp(argv[1], "run") == 0 && argc == 3) {
        warmup = wait_until_correlated();
        int n = atoi(argv[2]);
        for (int i = 0; i < n; i++) step_of_two();
        CHECK(launch("outside_kernel", 0, 0, 100000, NULL, NULL, 8, 0, 0) != 0, "launch");
        uint64_t step = vllm_profiler_step_begin(1, 1);
        CHECK(launch_graph("graph_kernel", 1, 9, 250000, 3) != 0, "graph launch");
        vllm_profiler_step_end(step);
    } else if (strcmp(argv[1], "pause") == 0) {
        warmup = wait_until_correlated();
        step_of_two();
        step_of_two();
        CHECK(vllm_profiler_kernels_pause() == VLLM_PROFILER_OK, "pause");
        uint64_t step = vllm_profiler_step_begin(1, 1);
        CHECK(depth(CUSTOM2) == 0, "nothing pushed while paused");
        for (int i = 0; i < 5; i++) launch("while_paused", 0, 1, 1000, NULL, NULL, 8, 0, 0);
        vllm_profiler_step_end(step);
        CHECK(vllm_profiler_kernels_resume() == VLLM_PROFILER_OK, "resume");
        step = vllm_profiler_step_begin(1, 1);
        CHECK(depth(CUSTOM2) == 1, "pushed again after resume");
        for (int i = 0; i < 3; i++)
            CHECK(launch("after_resume", 0, 1, 1000, NULL, NULL, 8, 0, 0) != 0, "launch");
        vllm_profiler_step_end(step);
    } else if (strcmp(argv[1], "refused") == 0) {
        for (int i = 0; i < 20; i++) {
            uint64_t step = vllm_profiler_step_begin(1, 1);
            CHECK(depth(CUSTOM2) == 0, "no context pushed where the tracer is refused");
            launch("refused_kernel", 0, 0, 1000, NULL, NULL, 8, 0, 0);
            vllm_profiler_step_end(step);
            sleep_ms(10);
        }
    } else {
        return 2;
    }
    printf("warmup %d\n", warmup);
    return failures ? 1 : 0;
}
