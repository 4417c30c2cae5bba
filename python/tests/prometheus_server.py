"""A real Prometheus server for the tests (Debian's `prometheus`, installed by .ci/run), run with
the shipped scrape config (examples/prometheus/prometheus.yml) pointed at a test's endpoint, and
the shipped Grafana dashboard's queries run against it."""

import json
import math
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

from conftest import ROOT, free_port, missing_tool

SCRAPE_CONFIG = ROOT / "examples" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "examples" / "grafana" / "vllm-profiler-dashboard.json"
SHIPPED_TARGET = "127.0.0.1:9478"
# What the tests put in for the dashboard's variables: every host, and a rate window that
# holds several 1 s scrapes.
VARIABLES = {"$instance": ".*", "$__rate_interval": "15s"}




class Prometheus:
    """A Prometheus server scraping `target` every second with the shipped config."""

    def __init__(self, tmp_path, target):
        binary = shutil.which("prometheus")
        if binary is None:
            missing_tool("no prometheus binary (Debian: apt-get install prometheus; .ci/run does)")
        shipped = SCRAPE_CONFIG.read_text()
        assert SHIPPED_TARGET in shipped and "scrape_interval: 15s" in shipped
        config = tmp_path / "prometheus.yml"
        config.write_text(shipped.replace(SHIPPED_TARGET, target)
                          .replace("scrape_interval: 15s", "scrape_interval: 1s"))
        self.port = free_port()
        self.log = tmp_path / "prometheus.log"
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "w"),
        )

    def query(self, expr):
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr})
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.load(response)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def wait_for(self, expr, check, timeout=90):
        """Queries `expr` until `check(result)` holds; the result."""
        deadline = time.monotonic() + timeout
        result = None
        while True:
            try:
                result = self.query(expr)
                if check(result):
                    return result
            except OSError:
                pass
            assert time.monotonic() < deadline, (expr, result, self.log.read_text()[-3000:])
            time.sleep(0.5)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def dashboard_queries():
    """(panel title, PromQL) of every target of every panel of the shipped dashboard, with
    the variables filled in."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for name, value in VARIABLES.items():
                expr = expr.replace(name, value)
            assert "$" not in expr, (panel["title"], expr)
            queries.append((panel["title"], expr))
    return queries


def check_dashboard(prometheus):
    """Every panel query returns at least one series with a finite value (waiting for the rate
    windows to fill); {title: result}."""
    results = {}
    for title, expr in dashboard_queries():
        results[title] = prometheus.wait_for(
            expr, lambda r: any(math.isfinite(float(s["value"][1])) for s in r), timeout=60)
    return results
