"""Open a run's TensorBoard as a browser would and check that every custom-scalars chart shows data (issue 18 §8).

Starts ``tensorboard --logdir LOGDIR`` on a free local port, reads the custom-scalars layout of every run, and asks
TensorBoard's own HTTP API, as its web page does, for the points of every tag pattern of every chart; a chart whose
patterns match no point in any run is reported as empty (exit 1). With ``--screenshot FILE.png`` and a headless
Chromium on the PATH (``chromium-headless-shell`` / ``chromium``), the custom-scalars page is also rendered to FILE.

    python benchmarks/tensorboard_check.py runs/demo [--screenshot docs/demo_tensorboard.png]
"""
from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")


def _get(port: int, path: str, **query) -> object:
    url = f"http://127.0.0.1:{port}/data/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def empty_charts(port: int) -> tuple[list[str], int]:
    """(titles of charts with no point in any run, number of charts)."""
    runs = _get(port, "runs")
    charts, empty = {}, []
    layout = _get(port, "plugin/custom_scalars/layout")   # TensorBoard merges the runs' layouts
    for category in layout.get("category", []):
        for chart in category.get("chart", []):
            charts[f"{category['title']} / {chart['title']}"] = chart.get("multiline", {}).get("tag", [])
    for title, tags in charts.items():
        points = 0
        for run in runs:
            for tag in tags:
                reply = _get(port, "plugin/custom_scalars/scalars", run=run, tag=tag)
                points += sum(len(events) for events in reply.get("tag_to_events", {}).values())
        if not points:
            empty.append(title)
    return empty, len(charts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logdir", type=Path)
    parser.add_argument("--screenshot", type=Path, help="render the custom-scalars page to this PNG")
    args = parser.parse_args(argv)
    if not args.logdir.is_dir():
        parser.error(f"{str(args.logdir)!r} is not a folder")
    tensorboard = Path(sys.executable).with_name("tensorboard")
    port = _free_port()
    server = subprocess.Popen([str(tensorboard), "--logdir", str(args.logdir), "--host", "127.0.0.1", "--port",
                               str(port), "--reload_interval", "0"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _get(port, "runs"):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                print("TensorBoard did not list any run within 60 s", file=sys.stderr)
                return 1
            time.sleep(0.5)
        empty, n = empty_charts(port)
        print(f"{n} custom-scalars charts; " + (f"EMPTY: {', '.join(empty)}" if empty else "every one shows data"))
        if args.screenshot:
            browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
            if browser is None:
                print("no headless Chromium on the PATH: no screenshot")
            else:
                subprocess.run([browser, "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                "--window-size=1400,1100", "--virtual-time-budget=20000",
                                f"--screenshot={args.screenshot.resolve()}",
                                f"http://127.0.0.1:{port}/#custom_scalars"], check=True, timeout=180,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                print(f"screenshot: {args.screenshot}")
        return 1 if empty else 0
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
