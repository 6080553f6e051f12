"""Open a Snakemake report in a real headless browser and check what a reader sees first.

    .venv/bin/snakemake --cores 2 --report results/report.html
    .venv/bin/python scripts/check_report.py results/report.html --out results/report_check

Needs Chromium (Debian: ``apt-get install -y chromium``; or pass ``--browser``). Checks:

1. the page the report opens on, as rendered by the browser (JavaScript run), holds the
   results page: the comparison table, then the comparison figure, then one section per
   method;
2. every ``<img>`` of that page, and every image result embedded in the report, is a data
   URI that decodes to a PNG/SVG/JPEG of non-zero size (a self-contained report has no
   other kind of image: anything else is a broken image once the file is moved);
3. a screenshot at ``--window-size`` has exactly those dimensions and is not blank.

Exits non-zero naming the first failed check; writes ``front_page.png`` and
``front_page.html`` (the rendered DOM) into ``--out``.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def find_browser(given: str | None) -> str:
    for name in [given] if given else ["chromium", "chromium-browser", "google-chrome", "chrome"]:
        path = shutil.which(name) if name else None
        if path:
            return path
    sys.exit("no Chromium found: install it (Debian: apt-get install -y chromium) or pass --browser")


def run_browser(browser: str, url: str, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=8000", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def decode_image(uri: str) -> tuple[int, int]:
    """(width, height) of a data-URI image; ValueError when it is not a decodable image."""
    match = re.match(r"data:image/(png|jpeg|svg\+xml)((?:;[^,;]*)*),(.*)", uri, flags=re.S)
    if not match:
        raise ValueError(f"not an embedded image: {uri[:60]!r}")
    kind, parameters, payload = match.groups()
    data = base64.b64decode(payload) if parameters.endswith(";base64") else payload.encode()
    if kind == "svg+xml":
        if b"<svg" not in data[:2000]:
            raise ValueError("SVG without <svg>")
        return (1, 1)
    import matplotlib.image as mpimg

    arr = mpimg.imread(io.BytesIO(data), format=kind)
    if arr.size == 0:
        raise ValueError("empty image")
    return arr.shape[1], arr.shape[0]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    if data[:8] != PNG_MAGIC:
        raise ValueError(f"{path} is not a PNG")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def check(report: Path, out: Path, browser: str, width: int, height: int) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    url = report.resolve().as_uri()
    problems: list[str] = []

    dom = run_browser(browser, url, "--dump-dom")
    if dom.returncode != 0 or "<html" not in dom.stdout:
        return [f"the browser could not render {report}: {dom.stderr.strip()[-500:]}"]
    (out / "front_page.html").write_text(dom.stdout)
    text = dom.stdout
    # 1. the front page: table, then figure, then per-method sections
    positions = {
        "comparison table": text.find("<table"),
        "comparison figure": text.find('alt="comparison of methods"'),
        "per-method sections": text.find("<h3>"),
    }
    missing = [k for k, v in positions.items() if v < 0]
    if missing:
        problems.append(f"the front page lacks: {', '.join(missing)}")
    elif not positions["comparison table"] < positions["comparison figure"] < positions["per-method sections"]:
        problems.append(f"front page order is not table, figure, methods: {positions}")
    # 2. images on the front page, and every image result embedded in the report
    srcs = [html.unescape(s) for s in re.findall(r'<img[^>]*\ssrc="([^"]*)"', text)]
    embedded = re.findall(r'"data_uri":\s*"(data:image/[^"]+)"', report.read_text(errors="replace"))
    for i, src in enumerate(srcs + embedded):
        try:
            w, h = decode_image(src)
            if w < 1 or h < 1:
                raise ValueError("zero size")
        except Exception as err:  # noqa: BLE001 (every failure is a broken image)
            where = f"front-page <img> {i}" if i < len(srcs) else f"report result {i - len(srcs)}"
            problems.append(f"broken image ({where}): {err}")
    if not srcs:
        problems.append("no image on the front page")
    # 3. screenshot of what the reader sees first
    shot = out / "front_page.png"
    res = run_browser(browser, url, f"--screenshot={shot}", f"--window-size={width},{height}")
    if res.returncode != 0 or not shot.exists():
        problems.append(f"no screenshot: {res.stderr.strip()[-300:]}")
    else:
        size = png_size(shot)
        if size != (width, height):
            problems.append(f"screenshot is {size[0]}x{size[1]}, expected {width}x{height}")
        import matplotlib.image as mpimg
        import numpy as np

        pixels = mpimg.imread(shot)[..., :3]
        if float(pixels.std()) < 0.02:
            problems.append("the screenshot is blank")
    print(f"front page: {len(srcs)} image(s), {len(embedded)} embedded result image(s); screenshot {shot}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="report.html written by snakemake --report")
    parser.add_argument("--out", type=Path, default=Path("results/report_check"))
    parser.add_argument("--browser", default=None, help="Chromium executable (default: found on PATH)")
    parser.add_argument("--window-size", default="1400,1000", help="screenshot width,height in pixels")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.window_size.split(","))
    problems = check(args.report, args.out, find_browser(args.browser), width, height)
    for p in problems:
        print("FAIL:", p)
    if not problems:
        print("report OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
