"""A real TensorBoard server reads a finished run's cluster census back through its HTTP API."""
import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

from tests.helpers.runs import ENV


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tensorboard_serves_the_census(tiny_run):
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(tiny_run / "tensorboard"),
                               "--port", str(port), "--host", "127.0.0.1", "--load_fast", "false",
                               "--reload_interval", "1"], env=ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    query = urllib.parse.urlencode({"run": ".", "tag": "clusters/clustered"})
    url = f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?{query}"
    try:
        deadline, points = time.time() + 120, None
        while time.time() < deadline and points is None:
            try:
                with urllib.request.urlopen(url, timeout=5) as reply:
                    points = json.loads(reply.read())
            except OSError:       # not up yet, or the run not loaded yet (HTTP 400)
                time.sleep(0.5)
        assert points is not None, "TensorBoard never served clusters/clustered"
        census = [json.loads(line) for line in (tiny_run / "census.jsonl").read_text().splitlines()]
        assert [p[1] for p in points] == [c["step"] for c in census]
        assert [round(p[2], 5) for p in points] == [round(c["clustered"], 5) for c in census]
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_every_custom_scalars_chart_shows_data(tiny_run, tmp_path):
    """What the web page asks TensorBoard for: every chart of the layout has points (benchmarks/tensorboard_check.py;
    a chart for the EMA appears only in runs that census an EMA)."""
    from tests.helpers import ROOT
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tensorboard_check.py"), str(tiny_run)],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "every one shows data" in done.stdout, done.stdout + done.stderr
