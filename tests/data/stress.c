/* Concurrency stress for tests/concurrency_e2e.rs.
 *
 * stress THREADS SPANS_EACH SPANS_PER_STEP: THREADS threads each record SPANS_EACH spans,
 * SPANS_PER_STEP of them to a step, while the main thread exports and turns profiling off and
 * on again. A call refused because profiling is off (VLLM_PROFILER_E_NOT_ENABLED, handle 0)
 * is retried until it is on again, so every span and step that began also ends by an explicit
 * call, and each end says whether its event was kept (OK) or dropped (BUFFER_FULL).
 *
 * Prints one line: "spans_ok S spans_lost SL steps_ok T steps_lost TL refused R cycles C
 * exports E". On a failed check, a line on stderr and exit status 1. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "vllm_profiler.h"
#include "check.h"

static long spans_each, spans_per_step;
static atomic_long spans_ok, spans_lost, steps_ok, steps_lost, refused;
static atomic_int done;

static const char *const NAMES[] = {"model", "model.layers.0", "model.layers.1", "lm_head"};

static void sleep_us(long us) {
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000L};
    nanosleep(&ts, NULL);
}

/* Waits out a disabled window: the main thread turns profiling on again within milliseconds. */
static void refused_once(void) {
    atomic_fetch_add(&refused, 1);
    sched_yield();
}

static uint64_t begin_step(void) {
    for (;;) {
        uint64_t step = vllm_profiler_step_begin(1, 2);
        if (step != 0) return step;
        refused_once();
    }
}

static uint64_t begin_span(const char *name) {
    for (;;) {
        uint64_t span = vllm_profiler_span_begin(name);
        if (span != 0) return span;
        refused_once();
    }
}

/* Ends a step or span, retrying while profiling is off; counts whether its event was kept. */
static void end(int32_t (*end_fn)(uint64_t), uint64_t handle, atomic_long *ok, atomic_long *lost) {
    for (;;) {
        int32_t rc = end_fn(handle);
        if (rc == VLLM_PROFILER_OK) {
            atomic_fetch_add(ok, 1);
            return;
        }
        if (rc == VLLM_PROFILER_E_BUFFER_FULL) {
            atomic_fetch_add(lost, 1);
            return;
        }
        CHECK(rc == VLLM_PROFILER_E_NOT_ENABLED, "end returned %d", rc);
        if (rc != VLLM_PROFILER_E_NOT_ENABLED) return;
        refused_once();
    }
}

static void *record_thread(void *arg) {
    (void)arg;
    long recorded = 0;
    while (recorded < spans_each) {
        uint64_t step = begin_step();
        for (long k = 0; k < spans_per_step && recorded < spans_each; k++, recorded++) {
            uint64_t span = begin_span(NAMES[k % 4]);
            end(vllm_profiler_span_end, span, &spans_ok, &spans_lost);
        }
        end(vllm_profiler_step_end, step, &steps_ok, &steps_lost);
    }
    atomic_fetch_add(&done, 1);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: stress THREADS SPANS_EACH SPANS_PER_STEP\n");
        return 2;
    }
    int threads = atoi(argv[1]);
    spans_each = atol(argv[2]);
    spans_per_step = atol(argv[3]);
    CHECK(threads > 0 && threads <= 256 && spans_each > 0 && spans_per_step > 0, "arguments");
    if (failures) return 2;
    CHECK(vllm_profiler_enable(NULL) == VLLM_PROFILER_OK, "enable");
    pthread_t *workers = calloc((size_t)threads, sizeof *workers);
    for (int t = 0; t < threads; t++) pthread_create(&workers[t], NULL, record_thread, NULL);
    long cycles = 0, exports = 0;
    for (long round = 0; atomic_load(&done) < threads; round++) {
        CHECK(vllm_profiler_export(NULL) >= 0, "export while recording");
        exports++;
        if (round % 5 == 2) {
            CHECK(vllm_profiler_disable() == VLLM_PROFILER_OK, "disable");
            sleep_us(500);
            CHECK(vllm_profiler_enable(NULL) == VLLM_PROFILER_OK, "enable again");
            cycles++;
        }
        sleep_us(1000);
    }
    for (int t = 0; t < threads; t++) pthread_join(workers[t], NULL);
    free(workers);
    printf("spans_ok %ld spans_lost %ld steps_ok %ld steps_lost %ld refused %ld cycles %ld "
           "exports %ld\n",
           atomic_load(&spans_ok), atomic_load(&spans_lost), atomic_load(&steps_ok),
           atomic_load(&steps_lost), atomic_load(&refused), cycles, exports);
    return failures == 0 ? 0 : 1;
}
