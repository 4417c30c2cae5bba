/* Ends spans with annotations (memory delta, tensor shapes) through the C ABI; run under
 * LD_PRELOAD by tests/agent_e2e.rs, which checks the exact figures in the reports.
 * Step 0: model.layers.0 twice (+1.5 MiB with shapes A, +2.25 MiB with shapes B),
 *         model.layers.1 with neither, model.layers.2 with +8 MiB and rejected shapes
 *         (three times: an unknown key, not UTF-8, too long), model.layers.3 with an infinite
 *         delta (none) and output shapes only.
 * Step 1: model.layers.0 with -0.75 MiB and no shapes.
 * Prints nothing on success; on a failed check, one line on stderr and exit status 1. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vllm_profiler.h"
#include "check.h"


static void last_error_contains(const char *needle, int line) {
    char message[512];
    int32_t n = vllm_profiler_last_error(message, sizeof message);
    if (n <= 0 || strstr(message, needle) == NULL) {
        fprintf(stderr, "line %d: last error \"%s\" lacks \"%s\"\n", line, n > 0 ? message : "",
                needle);
        failures++;
    }
}

static const char *SHAPES_A = "{\"input_shapes\": [[8, 512, 768]], \"output_shapes\": [[8, 512, 768]]}";
static const char *SHAPES_B = "{\"input_shapes\": [[1, 2]], \"output_shapes\": [[3]]}";

/* A span ended with a rejected shapes string: -2, the reason, and the span ended anyway. */
static void rejected(const char *shapes, const char *reason, int line) {
    uint64_t span = vllm_profiler_span_begin("model.layers.2");
    int32_t rc = vllm_profiler_span_end_annotated(span, 8.0, shapes);
    if (rc != VLLM_PROFILER_E_INVALID_ARGUMENT) {
        fprintf(stderr, "line %d: rejected shapes returned %d\n", line, rc);
        failures++;
    }
    last_error_contains(reason, line);
    last_error_contains("the span was ended", line);
    if (vllm_profiler_span_end(span) != VLLM_PROFILER_E_UNKNOWN_HANDLE) {
        fprintf(stderr, "line %d: the span was not ended\n", line);
        failures++;
    }
}

int main(void) {
    uint64_t step = vllm_profiler_step_begin(4, 64);
    CHECK(step != 0, "step_begin returned 0");

    uint64_t span = vllm_profiler_span_begin("model.layers.0");
    CHECK(vllm_profiler_span_end_annotated(span, 1.5, SHAPES_A) == VLLM_PROFILER_OK, "A");
    span = vllm_profiler_span_begin("model.layers.0");
    CHECK(vllm_profiler_span_end_annotated(span, 2.25, SHAPES_B) == VLLM_PROFILER_OK, "B");

    span = vllm_profiler_span_begin("model.layers.1");
    CHECK(vllm_profiler_span_end_annotated(span, NAN, NULL) == VLLM_PROFILER_OK, "none");

    rejected("{\"input_shapes\": [[1]], \"dtype\": \"f16\"}", "unknown field `dtype`", __LINE__);
    rejected("{\"input_shapes\": [[\xff]]}", "not valid UTF-8", __LINE__);
    char *long_shapes = malloc(VLLM_PROFILER_MAX_SHAPES_JSON_LEN + 100);
    memset(long_shapes, ' ', VLLM_PROFILER_MAX_SHAPES_JSON_LEN + 99);
    memcpy(long_shapes, "{\"input_shapes\": [[1]]}", 23);
    long_shapes[VLLM_PROFILER_MAX_SHAPES_JSON_LEN + 99] = '\0';
    rejected(long_shapes, "longer than 4096 bytes", __LINE__);
    free(long_shapes);

    span = vllm_profiler_span_begin("model.layers.3");
    CHECK(vllm_profiler_span_end_annotated(span, INFINITY, "{\"output_shapes\": [[4, 16]]}") ==
              VLLM_PROFILER_OK,
          "output only");
    CHECK(vllm_profiler_span_end_annotated(span, 1.0, NULL) == VLLM_PROFILER_E_UNKNOWN_HANDLE,
          "ended twice");
    CHECK(vllm_profiler_step_end(step) == VLLM_PROFILER_OK, "step_end");

    step = vllm_profiler_step_begin(4, 64);
    span = vllm_profiler_span_begin("model.layers.0");
    CHECK(vllm_profiler_span_end_annotated(span, -0.75, NULL) == VLLM_PROFILER_OK, "step 1");
    CHECK(vllm_profiler_step_end(step) == VLLM_PROFILER_OK, "step_end");
    return failures == 0 ? 0 : 1;
}
