//! The sampler's own CPU time per sample per device, against the fake NVML.
//!
//! `sample_per_device` is one `NvmlBackend::sample` of one device: every NVML call plus our
//! bookkeeping. `nvml_calls_only` makes the same NVML calls straight through nvml-wrapper.
//! The difference is what the sampler adds; on a real GPU each NVML call costs microseconds
//! (a driver ioctl), against a fake that answers in nanoseconds.
//!
//! `sample_per_device_gpm` samples a device that also gives GPM (a Hopper's SM activity,
//! occupancy, tensor activity and DRAM bandwidth: one more sample and one metrics query); the
//! script's two devices differ in that alone, so its excess over `sample_per_device` is the
//! cost of GPM.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::Nvml;
use vllm_profiler_gpu::{DeviceBackend, HostProbe, NvmlBackend, Options, SharedBackend};

fn script() -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    let frame = serde_json::json!({
        "gpu_utilization": 50, "memory_controller_utilization": 20, "memory_used_mb": 4096,
        "temperature": 60, "power_draw_mw": 250000, "power_limit_mw": 700000,
        "sm_clock_mhz": 1980, "memory_clock_mhz": 2619,
        "processes": [{"pid": "self", "used_memory_mb": 2048}]
    });
    let mut gpm_frame = frame.clone();
    gpm_frame["gpm"] = serde_json::json!({
        "SM_UTIL": 61.5, "SM_OCCUPANCY": 30.0, "ANY_TENSOR_UTIL": 12.5, "DRAM_BW_UTIL": 77.0
    });
    let script = serde_json::json!({"devices": [
        {"name": "Bench GPU", "uuid": "GPU-bench", "memory_total_mb": 81920, "frames": [frame]},
        {"name": "Bench GPM GPU", "uuid": "GPU-bench-gpm", "memory_total_mb": 81920,
         "frames": [gpm_frame]},
    ]});
    std::fs::write(file.path(), script.to_string()).expect("script written");
    file
}

fn sampler(c: &mut Criterion) {
    let script = script();
    // Read by the fake when it loads, below.
    std::env::set_var("FAKE_NVML_SCRIPT", script.path());
    let library = vllm_profiler_tests::fake_nvml_library();
    let device_options = |index: u32| Options {
        nvml_library: Some(library.to_path_buf()),
        devices: Some(vec![index]),
        ..Options::default()
    };
    let options = device_options(0);
    let mut out = Vec::with_capacity(4);
    for (name, index) in [
        ("gpu/sample_per_device", 0),
        ("gpu/sample_per_device_gpm", 1),
    ] {
        let mut backend = NvmlBackend::open(&device_options(index)).expect("the fake NVML opens");
        // Two samples first: GPM's figures need an interval, and `cargo test --benches` runs
        // each bench once. The bench then measures the steady state.
        for _ in 0..2 {
            out.clear();
            backend.sample(1.0, &mut out);
        }
        let gpm = out[0].gpm();
        assert_eq!(gpm.is_some(), index == 1, "GPM figures only where scripted");
        c.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                backend.sample(black_box(1.0), &mut out);
                black_box(&out);
            })
        });
    }

    let nvml = Nvml::builder()
        .lib_path(library.as_os_str())
        .init()
        .expect("the fake NVML initialises");
    let device = nvml.device_by_index(0).expect("device 0");
    c.bench_function("gpu/nvml_calls_only", |b| {
        b.iter(|| {
            black_box(device.utilization_rates().ok());
            black_box(device.memory_info().ok());
            black_box(device.running_compute_processes().ok());
            black_box(device.temperature(TemperatureSensor::Gpu).ok());
            black_box(device.power_usage().ok());
            black_box(device.enforced_power_limit().ok());
            black_box(device.clock_info(Clock::SM).ok());
            black_box(device.clock_info(Clock::Memory).ok());
        })
    });
    // Never dropped: see the NVML module (no shutdown while the process lives).
    std::mem::forget(nvml);

    // One sampler per device per host: the sampling process's tick (read the device, then
    // replace the shared file) and another process's tick (take the shared sample). Two open
    // lock files lock like two processes, so both live here.
    let runtime = tempfile::tempdir().expect("temp dir");
    let open = || Box::new(NvmlBackend::open(&options).expect("the fake NVML opens"));
    let mut sampler = SharedBackend::new(open(), runtime.path(), std::time::Duration::from_secs(1))
        .ok()
        .expect("shares");
    let mut reader = SharedBackend::new(open(), runtime.path(), std::time::Duration::from_secs(1))
        .ok()
        .expect("shares");
    let mut timestamp = vllm_profiler_format::unix_now();
    // One tick each first, so that the roles are settled (and checked) even when a filter
    // skips the benches below.
    sampler.sample(timestamp, &mut out);
    reader.sample(timestamp, &mut out);
    assert!(sampler.is_sampler(0) && !reader.is_sampler(0));
    c.bench_function("gpu/shared_sampler_tick_per_device", |b| {
        b.iter(|| {
            out.clear();
            timestamp += 1.0;
            sampler.sample(black_box(timestamp), &mut out);
            black_box(&out);
        })
    });
    c.bench_function("gpu/shared_reader_tick_per_device", |b| {
        b.iter(|| {
            out.clear();
            reader.sample(black_box(timestamp), &mut out);
            black_box(&out);
        })
    });

    let mut host = HostProbe::default();
    c.bench_function("gpu/host_probe", |b| b.iter(|| black_box(host.sample(1.0))));
}

criterion_group!(benches, sampler);
criterion_main!(benches);
