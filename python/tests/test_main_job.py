"""README's first command, the main job (`bash examples/serve_and_report.sh`), works as
written: it builds the agent and the CLI, profiles the example serving loop with no code
change, prints the report through `vllm-profiler report`, and writes the HTML page and the
merged trace it names."""

import json
import os
import re
import subprocess

from conftest import ROOT, clean_env


def test_the_main_job_profiles_the_example_and_shows_the_report(tmp_path):
    env = clean_env()
    env.pop("PYTHONPATH", None)  # the script sets its own
    out = tmp_path / "results"
    env["VLLM_PROFILING_OUTPUT_DIR"] = str(out)
    env["PATH"] = os.environ["PATH"]
    proc = subprocess.run(
        ["bash", "examples/serve_and_report.sh", "--requests", "12"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    stdout = proc.stdout
    [steps] = re.findall(r"served 12 reviews in (\d+) engine steps", stdout)
    # The CLI's report: one process, with the loop's steps.
    assert re.search(rf"^process\s+\d+\s+{steps}\s", stdout, re.M), stdout
    assert f"HTML page:    {out}/report.html" in stdout
    assert f"merged trace: {out}/trace.json" in stdout
    assert (out / "report.html").read_text().startswith("<!DOCTYPE html>")
    trace = json.loads((out / "trace.json").read_text())
    assert any(e.get("ph") == "X" for e in trace["traceEvents"])
