"""The workloads the real-vLLM tests run, each in a process of its own:

    python workload.py MODE MODEL RESULT_JSON [OUT_DIR...]

- `offline`: `LLM(...)` and one generate; profiling comes from the environment alone.
- `api`: seed 004's three code-integration forms (enable/disable, the context manager, the
  decorator), one round each into OUT_DIR 1, 2 and 3. With the multiprocess engine each round
  makes its own `LLM` inside the form (the engine's processes inherit the settings). With the
  in-process engine (VLLM_ENABLE_V1_MULTIPROCESSING=0) one `LLM` is made first, with
  profiling off, and generates once; profiling is then turned on over the running engine, as
  an operator would.
- `late`: the multiprocess engine made with profiling off, then `enable_vllm_profiling()`:
  its engine core cannot be reached (one warning says so).
- `tp2`: `tensor_parallel_size=2` (vLLM's multiprocess executor: one worker per rank).
- `loop`: generates round after round until killed (the kill test), writing the number of
  rounds done to RESULT_JSON.loop after each.

RESULT_JSON gets this process's pid and, per round, its output dir, the Unix times it began
and ended, and per request its prompt length and generated tokens.
"""

import gc
import json
import os
import sys
import time

MAX_TOKENS = [4, 8, 12, 16, 20, 24, 28, 32]
PROMPTS = [f"the quick brown fox {i} jumps over" + " the lazy dog" * i for i in range(8)]
TP2_MAX_TOKENS = [3, 6]


def make_llm(model, **kwargs):
    from vllm import LLM

    return LLM(
        model=model,
        enforce_eager=True,
        max_model_len=256,
        dtype="float32",
        enable_prefix_caching=False,
        seed=0,
        **kwargs,
    )


def generate(llm, max_tokens=MAX_TOKENS):
    from vllm import SamplingParams

    prompts = PROMPTS[: len(max_tokens)]
    params = [SamplingParams(max_tokens=m, ignore_eos=True, temperature=0) for m in max_tokens]
    outputs = llm.generate(prompts, params, use_tqdm=False)
    return [[len(o.prompt_token_ids), len(o.outputs[0].token_ids)] for o in outputs]


def close(llm):
    llm.llm_engine.engine_core.shutdown()
    del llm
    gc.collect()


def timed(rounds, out_dir, body):
    began = time.time()
    requests = body()
    rounds.append({"dir": out_dir, "began": began, "ended": time.time(), "requests": requests})


def main():
    mode, model, result_path, *dirs = sys.argv[1:]
    rounds = []
    if mode == "offline":
        llm = make_llm(model)
        timed(rounds, None, lambda: generate(llm))
        close(llm)
    elif mode == "api":
        from vllm_profiler.integration import (
            VLLMProfilingContext,
            disable_vllm_profiling,
            enable_vllm_profiling,
            profile_vllm_function,
        )

        in_process = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0"
        shared = None
        if in_process:
            shared = make_llm(model)
            timed(rounds, None, lambda: generate(shared))  # before profiling: not recorded

        def run_round():
            llm = shared or make_llm(model)
            requests = generate(llm)
            if shared is None:
                close(llm)
            return requests

        enable_vllm_profiling(output_dir=dirs[0], enable_layer_profiling=True)
        timed(rounds, dirs[0], run_round)
        disable_vllm_profiling()

        with VLLMProfilingContext(output_dir=dirs[1], enable_layer_profiling=True):
            timed(rounds, dirs[1], run_round)

        @profile_vllm_function(output_dir=dirs[2], enable_layer_profiling=True)
        def decorated():
            timed(rounds, dirs[2], run_round)

        decorated()
    elif mode == "late":
        from vllm_profiler.integration import disable_vllm_profiling, enable_vllm_profiling

        llm = make_llm(model)
        enable_vllm_profiling(output_dir=dirs[0])
        timed(rounds, dirs[0], lambda: generate(llm))
        disable_vllm_profiling()
        close(llm)
    elif mode == "tp2":
        llm = make_llm(model, tensor_parallel_size=2)
        timed(rounds, None, lambda: generate(llm, TP2_MAX_TOKENS))
        close(llm)
    elif mode == "loop":
        llm = make_llm(model)
        done = 0
        while True:
            generate(llm)
            done += 1
            with open(result_path + ".loop", "w") as f:
                f.write(str(done))
    else:
        raise SystemExit(f"unknown mode {mode}")
    with open(result_path, "w") as f:
        json.dump({"pid": os.getpid(), "rounds": rounds}, f)


if __name__ == "__main__":
    main()
