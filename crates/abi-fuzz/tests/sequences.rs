//! The C ABI fuzzer's interpreter on stable Rust: seeded pseudo-random inputs, a bounded
//! budget (`ABI_FUZZ_INPUTS`, default 1000), the same invariants as `cargo fuzz run abi`.

/// SplitMix64: a seeded, reproducible byte source.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn random_call_sequences_keep_every_invariant() {
    let inputs: u64 = std::env::var("ABI_FUZZ_INPUTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let seed: u64 = std::env::var("ABI_FUZZ_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0x5eed);
    let mut rng = SplitMix(seed);
    let start = std::time::Instant::now();
    for _ in 0..inputs {
        let len = (rng.next() % 1024) as usize;
        let input = rng.bytes(len);
        vllm_profiler_abi_fuzz::run(&input);
    }
    eprintln!(
        "{inputs} inputs, {} C ABI calls in {:.1} s (seed {seed})",
        vllm_profiler_abi_fuzz::calls(),
        start.elapsed().as_secs_f64()
    );
    assert!(vllm_profiler_abi_fuzz::calls() >= inputs);
}
