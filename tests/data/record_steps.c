/* Records a known workload through the C ABI; run under LD_PRELOAD by tests/agent_e2e.rs.
 * Usage: record_steps STEPS       record STEPS steps with nested spans, then exit normally
 *        record_steps errors      check that bad calls return error codes with messages
 *        record_steps threads     4 threads record 20000 steps with a span each while the
 *                                 main thread exports; prints "lost N", the events that
 *                                 came back VLLM_PROFILER_E_BUFFER_FULL
 *        record_steps trace N     N steps as above on the main thread while a second thread
 *                                 records N steps inside a span "outer" begun before each
 *                                 step and ended inside it (the trace must clip the step)
 *        record_steps forks       3 threads fork 400 times each while another reconfigures;
 *                                 every child records one step and _exits; none may hang
 * Prints nothing else on success; on a failed check, one line on stderr and exit status 1. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vllm_profiler.h"
#include "check.h"


static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void last_error_contains(const char *needle, int line) {
    char message[512];
    int32_t n = vllm_profiler_last_error(message, sizeof message);
    if (n <= 0 || strstr(message, needle) == NULL) {
        fprintf(stderr, "line %d: last error \"%s\" lacks \"%s\"\n", line, n > 0 ? message : "", needle);
        failures++;
    }
}

static int record(int steps) {
    for (int i = 0; i < steps; i++) {
        uint64_t step = vllm_profiler_step_begin((uint32_t)(i + 1), (uint32_t)(10 * (i + 1)));
        CHECK(step != 0, "step_begin returned 0");
        uint64_t model = vllm_profiler_span_begin("model");
        uint64_t layer0 = vllm_profiler_span_begin("model.layers.0");
        sleep_ms(2);
        CHECK(vllm_profiler_span_end(layer0) == VLLM_PROFILER_OK, "span_end layer0");
        uint64_t layer1 = vllm_profiler_span_begin("model.layers.1");
        sleep_ms(1);
        CHECK(vllm_profiler_span_end(layer1) == VLLM_PROFILER_OK, "span_end layer1");
        CHECK(vllm_profiler_span_end(model) == VLLM_PROFILER_OK, "span_end model");
        CHECK(vllm_profiler_step_end(step) == VLLM_PROFILER_OK, "step_end");
    }
    return failures == 0 ? 0 : 1;
}

static void *begin_step_elsewhere(void *out) {
    *(uint64_t *)out = vllm_profiler_step_begin(1, 1);
    return NULL;
}

static int errors(void) {
    CHECK(vllm_profiler_step_end(0) == VLLM_PROFILER_E_UNKNOWN_HANDLE, "end without begin");
    last_error_contains("unknown step handle", __LINE__);
    CHECK(vllm_profiler_step_end(123456789) == VLLM_PROFILER_E_UNKNOWN_HANDLE, "unknown step id");
    CHECK(vllm_profiler_span_end(42) == VLLM_PROFILER_E_UNKNOWN_HANDLE, "unknown span id");
    last_error_contains("unknown span handle", __LINE__);

    CHECK(vllm_profiler_span_begin(NULL) == 0, "NULL name is not recorded");
    last_error_contains("NULL", __LINE__);
    CHECK(vllm_profiler_span_begin("") == 0, "empty name");
    last_error_contains("empty", __LINE__);
    CHECK(vllm_profiler_span_begin("bad \xff\xfe utf8") == 0, "invalid UTF-8");
    last_error_contains("UTF-8", __LINE__);

    uint64_t step = vllm_profiler_step_begin(1, 1);
    uint64_t span = vllm_profiler_span_begin("x");
    CHECK(vllm_profiler_step_end(span) == VLLM_PROFILER_E_UNKNOWN_HANDLE, "span id as step id");
    CHECK(vllm_profiler_span_end(span) == VLLM_PROFILER_OK, "span_end");
    CHECK(vllm_profiler_span_end(span) == VLLM_PROFILER_E_UNKNOWN_HANDLE, "span ended twice");
    CHECK(vllm_profiler_step_end(step) == VLLM_PROFILER_OK, "step_end");
    CHECK(vllm_profiler_step_end(step) == VLLM_PROFILER_E_UNKNOWN_HANDLE, "step ended twice");
    last_error_contains("already ended", __LINE__);

    /* A handle from another thread is not this thread's, even with the same sequence. */
    uint64_t mine = vllm_profiler_step_begin(7, 7);
    pthread_t other;
    uint64_t theirs = 0;
    pthread_create(&other, NULL, begin_step_elsewhere, &theirs);
    pthread_join(other, NULL);
    CHECK(theirs != 0 && theirs != mine, "distinct handles: %llx %llx",
          (unsigned long long)theirs, (unsigned long long)mine);
    CHECK(vllm_profiler_step_end(theirs) == VLLM_PROFILER_E_UNKNOWN_HANDLE, "cross-thread end");
    last_error_contains("another thread", __LINE__);
    CHECK(vllm_profiler_step_end(mine) == VLLM_PROFILER_OK, "own step still open");

    CHECK(vllm_profiler_enable("{\"colour\": 1}") == VLLM_PROFILER_E_INVALID_CONFIG, "bad config key");
    last_error_contains("colour", __LINE__);
    CHECK(vllm_profiler_enable("{") == VLLM_PROFILER_E_INVALID_CONFIG, "bad JSON");
    CHECK(vllm_profiler_export("") == VLLM_PROFILER_E_INVALID_ARGUMENT, "empty export dir");

    /* The summary, snprintf-style: its length can change between calls (new steps, the
     * generated_at timestamp), so grow the buffer until it fits. */
    char small[8];
    CHECK(vllm_profiler_summary_json(0, small, sizeof small) >= (int64_t)sizeof small, "does not fit");
    CHECK(strlen(small) == sizeof small - 1, "truncated and terminated");
    char *buf = NULL;
    int64_t got = 0;
    size_t len = 0;
    for (int attempt = 0; attempt < 5; attempt++) {
        int64_t need = vllm_profiler_summary_json(0, NULL, 0);
        CHECK(need > 0, "summary size %lld", (long long)need);
        len = (size_t)need + 64;
        buf = realloc(buf, len);
        got = vllm_profiler_summary_json(0, buf, len);
        if (got >= 0 && (size_t)got < len) break;
    }
    CHECK(got > 0 && (size_t)got < len && strlen(buf) == (size_t)got, "full summary");
    CHECK(strstr(buf, "\"total_steps\":2,") != NULL, "summary counts the two steps: %s", buf);
    free(buf);

    /* Past the nesting limit a span is refused with E_LIMIT; the open ones stay, the outermost
     * among them, and ending it ends them all. */
    uint64_t deep = vllm_profiler_step_begin(1, 1);
    uint64_t root = vllm_profiler_span_begin("root");
    for (int i = 1; i < VLLM_PROFILER_MAX_OPEN_SPANS; i++)
        CHECK(vllm_profiler_span_begin("nested") != 0, "span %d of the limit", i);
    CHECK(vllm_profiler_span_begin("one too many") == 0, "past the limit");
    last_error_contains("more than 4096 spans open", __LINE__);
    CHECK(vllm_profiler_span_end(root) == VLLM_PROFILER_OK, "the outermost span is kept");
    CHECK(vllm_profiler_span_begin("room again") != 0, "a span after the deep ones ended");
    CHECK(vllm_profiler_step_end(deep) == VLLM_PROFILER_OK, "deep step");

    CHECK(vllm_profiler_disable() == VLLM_PROFILER_OK, "disable");
    CHECK(vllm_profiler_is_enabled() == 0, "disabled");
    CHECK(vllm_profiler_disable() == VLLM_PROFILER_E_NOT_ENABLED, "disable twice");
    CHECK(vllm_profiler_enable("{\"sample_interval\": -1}") == VLLM_PROFILER_E_INVALID_CONFIG,
          "a rejected configuration");
    CHECK(vllm_profiler_is_enabled() == 0, "still disabled");
    /* Recording calls while off: one atomic load, the last error left as it was. */
    CHECK(vllm_profiler_step_begin(1, 1) == 0, "no step while disabled");
    CHECK(vllm_profiler_span_begin("x") == 0, "no span while disabled");
    CHECK(vllm_profiler_span_end(7) == VLLM_PROFILER_E_NOT_ENABLED, "span_end while disabled");
    CHECK(vllm_profiler_step_end(7) == VLLM_PROFILER_E_NOT_ENABLED, "step_end while disabled");
    last_error_contains("sample_interval", __LINE__);
    return failures == 0 ? 0 : 1;
}

#define THREADS 4
#define STEPS_PER_THREAD 5000

static atomic_long lost;
static atomic_int done;

static void *record_thread(void *arg) {
    (void)arg;
    for (int i = 0; i < STEPS_PER_THREAD; i++) {
        uint64_t step = vllm_profiler_step_begin(2, 3);
        CHECK(step != 0, "step_begin returned 0");
        uint64_t span = vllm_profiler_span_begin("layer");
        int32_t rc = vllm_profiler_span_end(span);
        CHECK(rc == VLLM_PROFILER_OK || rc == VLLM_PROFILER_E_BUFFER_FULL, "span_end %d", rc);
        if (rc == VLLM_PROFILER_E_BUFFER_FULL) atomic_fetch_add(&lost, 1);
        rc = vllm_profiler_step_end(step);
        CHECK(rc == VLLM_PROFILER_OK || rc == VLLM_PROFILER_E_BUFFER_FULL, "step_end %d", rc);
        if (rc == VLLM_PROFILER_E_BUFFER_FULL) atomic_fetch_add(&lost, 1);
    }
    atomic_fetch_add(&done, 1);
    return NULL;
}

static int threads(void) {
    /* Exports only read: they do not start an armed process, so start it first. */
    CHECK(vllm_profiler_enable(NULL) == VLLM_PROFILER_OK, "enable");
    pthread_t workers[THREADS];
    for (int t = 0; t < THREADS; t++) pthread_create(&workers[t], NULL, record_thread, NULL);
    int exports = 0;
    while (atomic_load(&done) < THREADS) {
        CHECK(vllm_profiler_export(NULL) >= 0, "export while recording");
        exports++;
        sleep_ms(1);
    }
    for (int t = 0; t < THREADS; t++) pthread_join(workers[t], NULL);
    CHECK(exports > 0, "exported at least once while the threads ran");
    printf("lost %ld\n", atomic_load(&lost));
    return failures == 0 ? 0 : 1;
}

static void *straddle_thread(void *arg) {
    long steps = (long)arg;
    for (long i = 0; i < steps; i++) {
        uint64_t outer = vllm_profiler_span_begin("outer");
        CHECK(outer != 0, "span_begin outer");
        sleep_ms(1);
        uint64_t step = vllm_profiler_step_begin(1, 1);
        CHECK(step != 0, "step_begin");
        sleep_ms(1);
        CHECK(vllm_profiler_span_end(outer) == VLLM_PROFILER_OK, "span_end outer");
        sleep_ms(1);
        CHECK(vllm_profiler_step_end(step) == VLLM_PROFILER_OK, "step_end");
    }
    return NULL;
}

static int trace(int steps) {
    pthread_t other;
    pthread_create(&other, NULL, straddle_thread, (void *)(long)steps);
    int rc = record(steps);
    pthread_join(other, NULL);
    return rc == 0 && failures == 0 ? 0 : 1;
}

#define FORKERS 3
#define FORKS_EACH 400

static atomic_int hung, bad_children, forkers_done;

static void *forker(void *arg) {
    (void)arg;
    for (int i = 0; i < FORKS_EACH; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            uint64_t step = vllm_profiler_step_begin(1, 1);
            int ok = step != 0 && vllm_profiler_step_end(step) == VLLM_PROFILER_OK;
            _exit(ok ? 0 : 3);
        }
        CHECK(pid > 0, "fork");
        int status = 0, waited_ms = 0;
        while (waitpid(pid, &status, WNOHANG) == 0) {
            if (++waited_ms > 10000) {
                kill(pid, SIGKILL);
                waitpid(pid, &status, 0);
                atomic_fetch_add(&hung, 1);
                break;
            }
            sleep_ms(1);
        }
        if (waited_ms <= 10000 && (!WIFEXITED(status) || WEXITSTATUS(status) != 0))
            atomic_fetch_add(&bad_children, 1);
    }
    atomic_fetch_add(&forkers_done, 1);
    return NULL;
}

static int forks(void) {
    pthread_t forkers[FORKERS];
    for (int t = 0; t < FORKERS; t++) pthread_create(&forkers[t], NULL, forker, NULL);
    /* Keep CONTROL busy while the others fork. */
    int reconfigured = 0;
    while (atomic_load(&forkers_done) < FORKERS) {
        CHECK(vllm_profiler_enable("{\"sample_interval\": 0.05}") == VLLM_PROFILER_OK, "enable");
        reconfigured++;
    }
    for (int t = 0; t < FORKERS; t++) pthread_join(forkers[t], NULL);
    CHECK(atomic_load(&hung) == 0, "%d children hung", atomic_load(&hung));
    CHECK(atomic_load(&bad_children) == 0, "%d children failed", atomic_load(&bad_children));
    CHECK(reconfigured > 0, "reconfigured while forking");
    return failures == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "forks") == 0) return forks();
    if (argc == 2 && strcmp(argv[1], "errors") == 0) return errors();
    if (argc == 2 && strcmp(argv[1], "threads") == 0) return threads();
    if (argc == 3 && strcmp(argv[1], "trace") == 0) return trace(atoi(argv[2]));
    if (argc == 2) return record(atoi(argv[1]));
    fprintf(stderr, "usage: record_steps STEPS | errors | threads | trace STEPS | forks\n");
    return 2;
}
