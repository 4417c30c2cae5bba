"""README's first command, the main job (`bash examples/serve_and_report.sh`), works as
written: it builds the agent and the CLI, profiles the example serving loop with no code
change, prints the report through `vllm-profiler report`, and writes the HTML page and the
merged trace it names. And the README's sample of that report is still what the CLI prints."""

import json
import os
import re
import subprocess

import pytest

from conftest import ROOT, clean_env


@pytest.fixture(scope="module")
def main_job(tmp_path_factory):
    """(the job's stdout, its output dir), for a run of 12 requests."""
    env = clean_env()
    env.pop("PYTHONPATH", None)  # the script sets its own
    out = tmp_path_factory.mktemp("main-job") / "results"
    env["VLLM_PROFILING_OUTPUT_DIR"] = str(out)
    env["PATH"] = os.environ["PATH"]
    proc = subprocess.run(
        ["bash", "examples/serve_and_report.sh", "--requests", "12"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout, out


def test_the_main_job_profiles_the_example_and_shows_the_report(main_job):
    stdout, out = main_job
    [steps] = re.findall(r"served 12 reviews in (\d+) engine steps", stdout)
    # The CLI's report: one process, with the loop's steps.
    assert re.search(rf"^process\s+\d+\s+{steps}\s", stdout, re.M), stdout
    assert f"HTML page:    {out}/report.html" in stdout
    assert f"merged trace: {out}/trace.json" in stdout
    assert (out / "report.html").read_text().startswith("<!DOCTYPE html>")
    trace = json.loads((out / "trace.json").read_text())
    assert any(e.get("ph") == "X" for e in trace["traceEvents"])


def readme_sample():
    """The lines of the README's sample of `vllm-profiler report` (its first `text` block)."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## `vllm-profiler report`\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```text\n", 1)[1].split("\n```", 1)[0].splitlines()


def shape(line):
    """A report line without what changes from run to run: the dir, the run id, the numbers
    (not those inside names such as model.layers.0), the column widths."""
    line = re.sub(r"^Reports in \S+", "Reports in DIR", line)
    line = re.sub(r"^Run \S+:", "Run ID:", line)
    line = re.sub(r"(?<![\w.])\d+(\.\d+)?(?![\w.])", "N", line)
    return " ".join(line.split())


def test_the_readme_sample_report_is_what_the_cli_prints(main_job):
    stdout, _ = main_job
    printed = {shape(line) for line in stdout.splitlines()}
    # Rules of dashes follow the widths of the numbers; "..." would mark a cut.
    sample = [line for line in readme_sample()
              if line.strip() and set(line) - {"-", " "} and line.strip() != "..."]
    assert len(sample) >= 10, sample
    for heading in ("step duration (ms)", "top layers", "process", "Reports in", "Run "):
        assert any(line.startswith(heading) for line in sample), heading
    stale = [line for line in sample if shape(line) not in printed]
    assert not stale, ("README.md's sample of `vllm-profiler report` has lines the CLI no "
                       "longer prints (remake it with docs/screenshot.py --report-text):\n"
                       + "\n".join(stale) + "\n\nThe CLI printed:\n" + stdout)
