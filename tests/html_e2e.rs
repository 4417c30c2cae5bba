//! `vllm-profiler report DIR --html OUT.html` on a real run (a preloaded C program sampling the
//! fake NVML): the page is self-contained and has every plot and the layer table; headless
//! Chromium renders it, and the screenshot shows the plots.

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use vllm_profiler_tests::*;

#[test]
fn the_html_report_has_every_plot_and_renders_in_chromium() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = compile_c(
        &workspace_root().join("tests/data/record_steps.c"),
        tmp.path(),
    );
    let out = tmp.path().join("reports");
    let frames: Vec<_> = (0..8)
        .map(|i| {
            json!({"gpu_utilization": 10 + 10 * i, "memory_controller_utilization": 1,
                   "memory_used_mb": 1000 + 100 * i, "power_draw_mw": 100_000 + 5_000 * i,
                   "gpm": {"SM_UTIL": 5 * i, "SM_OCCUPANCY": 2 * i, "DRAM_BW_UTIL": 50 + i}})
        })
        .collect();
    let mut cmd = profiled_on_fake_gpu(&exe, tmp.path(), &out, "Plotted GPU", &frames, "0.01");
    cmd.arg("30");
    assert_success(&run(&mut cmd, Duration::from_secs(60)));

    let page = tmp.path().join("report.html");
    let mut report = Command::new(cli_binary());
    report.arg("report").arg(&out).arg("--html").arg(&page);
    let done = run(&mut report, Duration::from_secs(60));
    assert_success(&done);
    assert!(done.stdout.contains("top layers"), "the tables still print");

    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    // Self-contained: nothing to fetch.
    for outside in ["<script", "src=", "href=", "@import", "url("] {
        assert!(!html.contains(outside), "{outside} in the page");
    }
    // The histogram and utilization, memory, power and the three GPM figures the device
    // gave over time: no tensor plot, since it gave none.
    assert_eq!(html.matches("<svg").count(), 7, "seven plots");
    for title in [
        "Step duration",
        "GPU 0 utilization",
        "GPU 0 memory used",
        "GPU 0 power",
        "GPU 0 SM active (GPM)",
        "GPU 0 SM occupancy (GPM)",
        "GPU 0 DRAM bandwidth (GPM)",
    ] {
        assert!(html.contains(title), "{title} missing");
    }
    for layer in ["model", "model.layers.0", "model.layers.1"] {
        assert!(
            html.contains(&format!("<tr><td>{layer}</td><td>30</td>")),
            "{layer} row missing"
        );
    }

    let Some(chromium) = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| which(name))
    else {
        missing_tool("the rendering check needs chromium (Debian: apt-get install chromium)");
        return;
    };
    let shot = tmp.path().join("shot.png");
    let mut browser = clean_command(chromium);
    browser
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1280,1400",
        ])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .env("HOME", tmp.path());
    let rendered = run(&mut browser, Duration::from_secs(120));
    assert!(rendered.status.success(), "{}", rendered.stderr);
    let decoder = png::Decoder::new(std::fs::File::open(&shot).expect("a screenshot"));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((frame.width, frame.height), (1280, 1400));
    let channels = frame.line_size / frame.width as usize;
    let pixels = &pixels[..frame.buffer_size()];
    let (mut inked, mut blue) = (0usize, 0usize);
    for px in pixels.chunks(channels) {
        let (r, g, b) = (px[0], px[1], px[2]);
        if r < 200 || g < 200 || b < 200 {
            inked += 1;
        }
        // The plots' lines and bars are blue.
        if b > 150 && r < 120 && g < 120 {
            blue += 1;
        }
    }
    let total = pixels.len() / channels;
    assert!(
        inked * 100 > total,
        "the page rendered almost blank: {inked}/{total}"
    );
    assert!(blue > 500, "no plot drawn: {blue} blue pixels");
}
