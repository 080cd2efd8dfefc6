"""The HTML report in a real browser: headless Chromium renders the sample results' report to a
PNG that is not blank, and its DOM dump shows the tables and SVG plots with no console message
from the page (the report has no scripts, so any console line means something is wrong).

Skipped when no `chromium` binary is on PATH (Debian: apt-get install chromium). With
TUNESMITH_UPDATE_SCREENSHOT=1 the screenshot is also copied to docs/report-screenshot.png."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from tunesmith.study.report import render_html
from tunesmith.study.verdict import verdict

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "study_results.json"
CHROMIUM = shutil.which("chromium")
WIDTH, HEIGHT = 1280, 2400

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (apt-get install -y chromium)")


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
           f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)


def png_info(path: Path) -> tuple[int, int, int]:
    """(width, height, number of distinct byte values in the decompressed image data)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, size = 8, b"", (0, 0)
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos: pos + 4]), data[pos + 4: pos + 8]
        chunk = data[pos + 8: pos + 8 + length]
        if kind == b"IHDR":
            size = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    return size[0], size[1], len(set(zlib.decompress(idat)))


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    results = json.loads(FIXTURE.read_text())
    path = tmp / "report.html"
    path.write_text(render_html(results, verdict(results)), encoding="utf-8")
    return path


def test_screenshot_is_written_and_not_blank(page, tmp_path):
    png = tmp_path / "report.png"
    proc = chromium(tmp_path, f"--screenshot={png}", f"--window-size={WIDTH},{HEIGHT}", page.as_uri())
    assert png.exists(), proc.stderr[-2000:]
    width, height, distinct = png_info(png)
    assert (width, height) == (WIDTH, HEIGHT)
    assert png.stat().st_size > 20_000 and distinct > 50, "the screenshot looks blank"
    if os.environ.get("TUNESMITH_UPDATE_SCREENSHOT") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copyfile(png, ROOT / "docs" / "report-screenshot.png")


def test_dom_has_tables_and_svg_and_no_console_errors(page, tmp_path):
    proc = chromium(tmp_path, "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri())
    dom = proc.stdout
    assert "<table" in dom and "<caption>Results per arm" in dom
    assert dom.count("<svg") == 6 and "<figcaption>" in dom
    assert "lora-sft" in dom and "&lt;script&gt;alert(" in dom  # the escaped answer is shown as text
    page_lines = [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln or "Refused to" in ln]
    assert page_lines == []
