//! `cargo +nightly fuzz run abi`: random sequences of C ABI calls (see crates/abi-fuzz).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vllm_profiler_abi_fuzz::run(data);
});
