"""A CPU-only LLM serving loop with continuous batching, profiled through the C ABI.

Restaurant reviews, as vLLM batches them: restaurants A, B and C send batches of reviews
over time; the engine admits them into a running batch (continuous batching, at most
--max-batch sequences), runs one prefill or decode step for the whole batch per engine step,
and retires sequences as they finish. The "model" is a small pure-Python transformer-shaped
network (embedding, attention-like mixing over a KV cache, MLP, LM head), so every step does
real CPU work.

Each engine step is a profiler step (batch size, tokens this step), and each layer a span, so
the reports show per-step and per-layer timings. Runs without the profiler too. Needs the
package (`pip install .`, or python/ on PYTHONPATH, as serve_and_report.sh does) for its
ctypes binding.
"""

import argparse
import contextlib
import random
import sys
from collections import defaultdict, deque

from vllm_profiler import _native

HIDDEN = 32
VOCAB = 64
LAYERS = 2
POSITIVE = {"delicious", "friendly", "fresh", "cozy"}


class Profiler:
    """Steps and spans through the C ABI; does nothing when the library is not loaded."""

    def __init__(self):
        try:
            self.lib = _native.library()
        except OSError as err:
            print(f"serving_loop: profiling off ({err})", file=sys.stderr)
            self.lib = None

    @contextlib.contextmanager
    def step(self, batch_size, num_tokens):
        handle = self.lib.vllm_profiler_step_begin(batch_size, num_tokens) if self.lib else 0
        try:
            yield
        finally:
            if handle:
                self.lib.vllm_profiler_step_end(handle)

    @contextlib.contextmanager
    def span(self, name):
        handle = self.lib.vllm_profiler_span_begin(name) if self.lib else 0
        try:
            yield
        finally:
            if handle:
                self.lib.vllm_profiler_span_end(handle)


class TinyModel:
    def __init__(self, rng):
        def matrix(rows, cols):
            return [[rng.uniform(-0.3, 0.3) for _ in range(cols)] for _ in range(rows)]

        self.embedding = matrix(VOCAB, HIDDEN)
        self.mlp = [matrix(HIDDEN, HIDDEN) for _ in range(LAYERS)]
        self.lm_head = matrix(VOCAB, HIDDEN)
        # Span names are encoded once: the hot path passes bytes straight to the C ABI.
        self.names = {
            "embed": b"model.embed_tokens",
            "lm_head": b"model.lm_head",
            "sampler": b"sampler",
            **{f"attn{i}": f"model.layers.{i}.self_attn".encode() for i in range(LAYERS)},
            **{f"mlp{i}": f"model.layers.{i}.mlp".encode() for i in range(LAYERS)},
            **{f"layer{i}": f"model.layers.{i}".encode() for i in range(LAYERS)},
        }

    def forward(self, profiler, batch):
        """One step for every sequence in the batch: returns the next token of each."""
        with profiler.span(self.names["embed"]):
            hidden = [list(self.embedding[seq.last_token]) for seq in batch]
        for layer in range(LAYERS):
            with profiler.span(self.names[f"layer{layer}"]):
                with profiler.span(self.names[f"attn{layer}"]):
                    for seq, h in zip(batch, hidden):
                        cache = seq.kv[layer]
                        for i, v in enumerate(h):
                            cache[i] += v
                        n = seq.length
                        for i in range(HIDDEN):
                            h[i] = 0.5 * h[i] + 0.5 * cache[i] / n
                with profiler.span(self.names[f"mlp{layer}"]):
                    weights = self.mlp[layer]
                    for j, h in enumerate(hidden):
                        out = [sum(w * x for w, x in zip(row, h)) for row in weights]
                        hidden[j] = [max(0.0, v) + x for v, x in zip(out, h)]
        with profiler.span(self.names["lm_head"]):
            logits = [[sum(w * x for w, x in zip(row, h)) for row in self.lm_head] for h in hidden]
        with profiler.span(self.names["sampler"]):
            return [max(range(VOCAB), key=row.__getitem__) for row in logits]


class Sequence:
    def __init__(self, restaurant, review, prompt_tokens, max_new_tokens):
        self.restaurant = restaurant
        self.review = review
        self.prompt = prompt_tokens
        self.max_new_tokens = max_new_tokens
        self.generated = []
        self.kv = [[0.0] * HIDDEN for _ in range(LAYERS)]
        self.prefilled = False

    @property
    def last_token(self):
        return self.generated[-1] if self.generated else self.prompt[-1]

    @property
    def length(self):
        return len(self.prompt) + len(self.generated)

    @property
    def done(self):
        return len(self.generated) >= self.max_new_tokens


def arrivals(rng, requests):
    """(engine step at which it arrives, restaurant, review) for every request."""
    words = ["delicious", "cold", "friendly", "slow", "fresh", "noisy", "cozy", "salty"]
    out = []
    for i in range(requests):
        restaurant = "ABC"[i % 3]
        review = " ".join(rng.choice(words) for _ in range(rng.randint(4, 12)))
        out.append((i // 3 * 2, restaurant, review))
    return deque(out)


def serve(args):
    rng = random.Random(args.seed)
    model = TinyModel(rng)
    profiler = Profiler()
    waiting = arrivals(rng, args.requests)
    running = []
    finished = defaultdict(list)
    step = 0
    while waiting or running:
        # Continuous batching: admit new arrivals whenever there is room in the batch.
        while waiting and waiting[0][0] <= step and len(running) < args.max_batch:
            _, restaurant, review = waiting.popleft()
            prompt = [hash(w) % VOCAB for w in review.split()]
            running.append(Sequence(restaurant, review, prompt, args.decode_tokens))
        if not running:
            step += 1
            continue
        # A newly admitted sequence runs its prompt (prefill); the others decode one token.
        tokens = sum(1 if seq.prefilled else len(seq.prompt) for seq in running)
        with profiler.step(len(running), tokens):
            for seq in running:
                if not seq.prefilled:
                    seq.prefilled = True
            next_tokens = model.forward(profiler, running)
            for seq, token in zip(running, next_tokens):
                seq.generated.append(token)
        for seq in [s for s in running if s.done]:
            running.remove(seq)
            words = seq.review.split()
            score = sum(w in POSITIVE for w in words) - sum(w not in POSITIVE for w in words)
            finished[seq.restaurant].append("positive" if score >= 0 else "negative")
        step += 1
    return step, finished


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="reviews to serve")
    parser.add_argument("--max-batch", type=int, default=8, help="sequences per step")
    parser.add_argument("--decode-tokens", type=int, default=24, help="tokens per review")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    steps, finished = serve(args)
    print(f"served {sum(map(len, finished.values()))} reviews in {steps} engine steps")
    for restaurant in sorted(finished):
        labels = finished[restaurant]
        print(f"  restaurant {restaurant}: {labels.count('positive')}/{len(labels)} positive")


if __name__ == "__main__":
    main()
