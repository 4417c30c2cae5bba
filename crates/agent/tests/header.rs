//! The committed C header must be what cbindgen makes of the current source.

use std::path::Path;

#[test]
fn committed_header_is_current() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).unwrap();
    let bindings = cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen parses the agent");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let header_path = crate_dir.join("include/vllm_profiler.h");
    if std::env::var_os("UPDATE_HEADER").is_some() {
        std::fs::write(&header_path, &generated).unwrap();
    }
    let committed = std::fs::read(&header_path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/vllm_profiler.h is stale; run: UPDATE_HEADER=1 cargo test -p vllm-profiler-agent --test header"
    );
    let text = String::from_utf8(generated).unwrap();
    for name in [
        "vllm_profiler_enable",
        "vllm_profiler_disable",
        "vllm_profiler_is_enabled",
        "vllm_profiler_step_begin",
        "vllm_profiler_step_end",
        "vllm_profiler_span_begin",
        "vllm_profiler_span_end",
        "vllm_profiler_span_end_annotated",
        "VLLM_PROFILER_MAX_SHAPES_JSON_LEN",
        "vllm_profiler_export",
        "vllm_profiler_summary_json",
        "vllm_profiler_last_error",
        "VLLM_PROFILER_E_NOT_ENABLED",
    ] {
        assert!(text.contains(name), "{name} missing from the header");
    }
}
