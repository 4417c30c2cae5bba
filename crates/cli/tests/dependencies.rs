//! What the CLI links: the session (its `recover` rebuilds one from a journal, percentiles and
//! all, and exports it) but never the recorder, the per-thread rings that only a recording
//! process needs; and the GPU crate stands on the report schema alone.

use std::process::Command;

/// `cargo tree` of `package`: its normal dependencies with their features, one per line.
fn tree(package: &str) -> String {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "-e",
            "normal,features",
            "--prefix",
            "none",
            "-p",
        ])
        .arg(package)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn the_cli_links_no_recorder() {
    let cli = tree("vllm-profiler-cli");
    assert!(cli.contains("vllm-profiler-core v"), "{cli}");
    for recorder in [
        "ringbuf",
        "vllm-profiler-core feature \"recorder\"",
        "vllm-profiler-core feature \"default\"",
    ] {
        assert!(!cli.contains(recorder), "the CLI links {recorder}:\n{cli}");
    }
    // The check can fail: the agent, which records, links both.
    let agent = tree("vllm-profiler-agent");
    assert!(agent.contains("ringbuf v") && agent.contains("feature \"recorder\""));
}

#[test]
fn the_gpu_crate_depends_on_no_crate_of_ours_but_the_schema() {
    let gpu = tree("vllm-profiler-gpu");
    let ours: Vec<&str> = gpu
        .lines()
        .filter(|line| line.starts_with("vllm-profiler-") && line.contains(" v0"))
        .map(|line| line.split(' ').next().unwrap_or(line))
        .collect();
    assert!(
        ours.iter()
            .all(|name| ["vllm-profiler-gpu", "vllm-profiler-format"].contains(name)),
        "{ours:?}"
    );
}
