"""The real-GPU check script (tests/real_gpu/check.py) runs here too: without a GPU it says why
it skipped, and with --require-gpu that skip is a failure. Its dmon parser is checked on a
captured layout."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "tests" / "real_gpu" / "check.py"


def _has_gpu() -> bool:
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


@pytest.mark.skipif(_has_gpu(), reason="a GPU is here: the script runs for real instead")
def test_without_a_gpu_the_script_skips_with_its_reason_and_require_gpu_fails():
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "SKIP        all: no working nvidia-smi: no NVIDIA GPU or driver on this machine"
    ]
    required = subprocess.run([sys.executable, str(SCRIPT), "--require-gpu"],
                              capture_output=True, text=True, timeout=60)
    assert required.returncode == 3


def test_dmon_columns_are_read_by_their_header():
    spec = importlib.util.spec_from_file_location("real_gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = (
        "# gpu    pwr  gtemp     sm    mem  gpm2  gpm3  gpm5 gpm10\n"
        "# Idx      W      C      %      %     %     %     %     %\n"
        "    0    312     61     98     40  71.5  30.0  55.0  80.5\n"
        "    0    315     62     99     41  72.5     -  56.0  81.5\n"
    )
    values = module.parse_dmon(text)
    assert values["gpm2"] == [71.5, 72.5]
    assert values["gpm3"] == [30.0]
    assert values["pwr"] == [312.0, 315.0]
