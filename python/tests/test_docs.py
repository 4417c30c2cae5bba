"""The README's screenshot of the HTML report: the committed picture (docs/report.png) is one,
and the script that makes it from a real profiled run (docs/screenshot.py: the main job, then
the page in headless Chromium) still runs and draws the report. The README's sample of
`vllm-profiler report` is held to the CLI's output in test_main_job.py."""

import os
import shutil
import struct
import subprocess
import sys
import zlib

from conftest import ROOT, clean_env, missing_tool, require_module

PICTURE = ROOT / "docs" / "report.png"


def read_png(path):
    """(width, height, rows of (r, g, b) pixels) of an 8-bit RGB or RGBA, non-interlaced PNG,
    as Chromium writes them."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"{path}: bad CRC in {kind!r}"
        chunks.append((kind, body))
        pos += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND", [k for k, _ in chunks]
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
    channels = 3 if color == 2 else 4
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    stride = width * channels
    assert len(raw) == height * (stride + 1), "truncated image data"
    rows, previous = [], bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                guess = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + guess) & 0xFF
            else:
                assert kind == 0, f"filter {kind}"
        rows.append([tuple(line[x:x + 3]) for x in range(0, stride, channels)])
        previous = line
    return width, height, rows


def assert_a_picture_of_the_report(path):
    width, height, rows = read_png(path)
    assert width == 1280, width
    assert 400 <= height <= 4000, height
    pixels = [px for row in rows for px in row]
    inked = sum(1 for r, g, b in pixels if min(r, g, b) < 200)
    # The histogram's bars are blue (as tests/html_e2e.rs checks the page's plots).
    blue = sum(1 for r, g, b in pixels if b > 150 and r < 120 and g < 120)
    assert inked * 100 > len(pixels), f"almost blank: {inked} of {len(pixels)} pixels inked"
    assert blue > 500, f"no plot drawn: {blue} blue pixels"


def test_the_committed_screenshot_is_a_picture_of_the_report():
    assert "![HTML report](docs/report.png)" in (ROOT / "README.md").read_text()
    assert PICTURE.stat().st_size < 400 * 1024, PICTURE.stat().st_size
    assert_a_picture_of_the_report(PICTURE)


def test_the_screenshot_script_still_makes_it_from_a_real_run(tmp_path):
    require_module("playwright", "pip install playwright (tests/python_env.sh does)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        missing_tool("no chromium (Debian: apt-get install chromium; .ci/run does)")
    env = clean_env()
    env.pop("PYTHONPATH", None)  # the main job sets its own
    env["PATH"] = os.environ["PATH"]
    png = tmp_path / "shot" / "report.png"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "screenshot.py"), "--output", str(png),
         "--requests", "12", "--chromium", chromium],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip() == f"wrote {png}"
    # The main job ran and served the 12 requests (its output goes to stderr here).
    assert "served 12 reviews in" in proc.stderr, proc.stderr[-4000:]
    assert_a_picture_of_the_report(png)
