"""Makes the README's screenshot of the HTML report from a real profiled run.

    python docs/screenshot.py [--output docs/report.png] [--report-text FILE] [--requests N]

It runs the main job (`bash examples/serve_and_report.sh`: builds the agent and the CLI,
profiles examples/serving_loop.py with VLLM_ENABLE_PROFILING=1 and LD_PRELOAD, writes
report.html) with VLLM_PROFILING_OUTPUT_DIR set to a temporary directory, then opens that
report.html in the system's headless Chromium (driven by playwright, which downloads no
browser) and writes a PNG of the whole page, 1280 pixels wide. --report-text also writes what
`vllm-profiler report DIR` prints for the same run (the README's sample comes from there).
Needs chromium (Debian: apt-get install chromium) and the playwright Python package
(tests/python_env.sh installs it). python/tests/test_docs.py checks that it still runs.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 1280
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def find_chromium(given):
    for name in [given] if given else ["chromium", "chromium-browser"]:
        path = shutil.which(name)
        if path:
            return path
    sys.exit("screenshot.py: no chromium (Debian: apt-get install chromium), or pass --chromium")


def profiled_run(results, requests):
    """The main job into `results`; its output goes to stderr."""
    env = dict(os.environ, VLLM_PROFILING_OUTPUT_DIR=str(results))
    args = ["--requests", str(requests)] if requests else []
    subprocess.run(["bash", "examples/serve_and_report.sh", *args], cwd=ROOT, env=env,
                   check=True, stdout=sys.stderr)
    return results / "report.html"


def render(page_file, png, chromium, profile):
    """A full-page PNG of `page_file`, WIDTH pixels wide, from headless Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # A fresh profile dir (and HOME) of its own, and nothing fetched: the page is
        # self-contained.
        browser = p.chromium.launch_persistent_context(
            str(profile), executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
            env=dict(os.environ, HOME=str(profile)),
            viewport={"width": WIDTH, "height": 400}, device_scale_factor=1)
        try:
            page = browser.new_page()
            page.goto(page_file.as_uri())
            page.screenshot(path=str(png), full_page=True)
        finally:
            browser.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "report.png",
                        help="the PNG to write (default: docs/report.png)")
    parser.add_argument("--report-text", type=Path,
                        help="also write `vllm-profiler report` of the run here")
    parser.add_argument("--requests", type=int,
                        help="reviews the serving loop serves (default: the loop's own)")
    parser.add_argument("--chromium", help="the Chromium to run (default: chromium on PATH)")
    opts = parser.parse_args()
    chromium = find_chromium(opts.chromium)
    with tempfile.TemporaryDirectory(prefix="vllm-profiler-screenshot-") as tmp:
        results = Path(tmp) / "profiling_results"
        page_file = profiled_run(results, opts.requests)
        if opts.report_text:
            cli = ROOT / "target" / "release" / "vllm-profiler"
            text = subprocess.run([str(cli), "report", str(results)], check=True,
                                  capture_output=True, text=True).stdout
            opts.report_text.write_text(text)
        opts.output.parent.mkdir(parents=True, exist_ok=True)
        render(page_file, opts.output, chromium, Path(tmp) / "chromium-profile")
    print(f"wrote {opts.output}")


if __name__ == "__main__":
    main()
