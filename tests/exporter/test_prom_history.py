"""The app's long-span history from a real Prometheus scraping a real agentd, and the client's
behaviour against servers that answer badly (a plain HTTP server on loopback)."""

from __future__ import annotations

import http.server
import math
import sys
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from agentd.protocol import JobSpec
from agentd.protocol.messages import Submit
from gui.sources.prom_history import HistoryError, PromHistory, promql_for, step_for
from tests.agentd_proc import free_port, start_agentd
from tests.exporter.test_real_prometheus import _wait_for, prometheus  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(180)

REPORTER = ("import sys, time\n"
            "n = 0\n"
            "while True:\n"
            "    n += 50\n"
            "    print(f'AGENTD_METRIC samples={n}', flush=True)\n"
            "    time.sleep(0.25)\n")


def test_history_of_gpus_nodes_and_job_rates_from_a_real_prometheus(tmp_path, prometheus) -> None:  # noqa: F811
    metrics_port = free_port()
    node = start_agentd(tmp_path, node="hist", simulate_gpus=2, interval=0.5,
                        extra=["--metrics-listen", f"127.0.0.1:{metrics_port}"])
    try:
        with node.client(timeout_s=10) as c:
            job = c.call(Submit(spec=JobSpec(argv=[sys.executable, "-c", REPORTER], name="rep",
                                             counters=["samples"]))).job
        port, prom, log = prometheus(metrics_port)
        _wait_for(port, f'fleetdeck_job_app_rate_per_second{{job_id="{job.id}",metric="samples"}} > 0',
                  "the job's sample rate", prom, log)
        _wait_for(port, 'count_over_time(fleetdeck_gpu_utilization_ratio{node="hist",gpu="1"}[1m]) >= 3',
                  "a few GPU points", prom, log)
        history = PromHistory(f"http://127.0.0.1:{port}")
        end = time.time()
        gpus = history.history("gpu", "sm_util_pct", end - 120, end, node="hist")
        keys = sorted(s.key for s in gpus)
        assert keys == [("hist", "gpu0", "sm_util_pct"), ("hist", "gpu1", "sm_util_pct")]
        for s in gpus:
            finite = s.values[np.isfinite(s.values)]
            assert len(finite) >= 1 and ((finite >= 0) & (finite <= 100)).all()
            assert (np.diff(s.times) > 0).all() and s.times[-1] <= end + 1
        cpu = history.history("node", "cpu_pct", end - 120, end, node="hist")
        assert [s.key for s in cpu] == [("hist", "", "cpu_pct")]
        mem = history.history("node", "mem_used_pct", end - 120, end)  # every node
        assert mem and 0 < float(np.nanmax(mem[0].values)) <= 100
        rates = history.history("job", "app:samples_per_s", end - 120, time.time() + 1, job_id=job.id)
        assert [s.key for s in rates] == [("hist", job.id, "app:samples_per_s")]
        # 50 samples every 0.25 s is 200/s; scheduling on a loaded machine makes it lower, never 0
        assert float(np.nanmax(rates[0].values)) > 20
    finally:
        node.stop()


def test_promql_selects_by_label_and_escapes_hostile_names() -> None:
    assert promql_for("gpu", "power_w", node="a") == 'fleetdeck_gpu_power_watts{node="a"}'
    q = promql_for("node", "net_rx_bytes_per_s", node='x"}or vector(1)#', step_s=15)
    assert 'node="x\\"}or vector(1)#"' in q and "[60s]" in q
    assert promql_for("job", "app:tokens_per_s", job_id="n.3") == \
        'fleetdeck_job_app_rate_per_second{job_id="n.3",metric="tokens"}'
    with pytest.raises(HistoryError, match="no Prometheus equivalent"):
        promql_for("job", "throughput")
    assert step_for(7 * 86400) == math.ceil(7 * 86400 / 1000) and step_for(600) == 15.0


class _Canned(http.server.BaseHTTPRequestHandler):
    body = b""
    code = 200

    def do_GET(self) -> None:  # http.server's name
        self.send_response(self.code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        try:
            self.wfile.write(self.body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def canned() -> Iterator[type[_Canned]]:
    handler = type("Handler", (_Canned,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield handler
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.mark.parametrize(("code", "body", "expect"), [
    (200, b"<html>grafana</html>", "not JSON"),
    (200, b'{"status":"success","data":{"resultType":"vector","result":[]}}', "not a range-query result"),
    (200, b'{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"x"]]}]}}',
     "value"),
    (200, b'{"status":"error","error":"parse error at char 3"}', "parse error at char 3"),
    (400, b'{"status":"error","error":"bad_data: invalid parameter"}', "HTTP 400"),
    (200, b"[" * 100 + b"1" * (2 * 2**20), "more than 1 MiB"),
])
def test_a_bad_server_gives_a_clear_error(canned, code: int, body: bytes, expect: str) -> None:
    canned.code, canned.body = code, body
    with pytest.raises(HistoryError) as err:
        PromHistory(canned.url, max_bytes=2**20).history("gpu", "temp_c", 0, 600)  # type: ignore[attr-defined]
    assert expect in str(err.value) and canned.url in str(err.value)  # type: ignore[attr-defined]


def test_unreachable_server_and_bad_url() -> None:
    with pytest.raises(HistoryError, match="cannot be reached"):
        PromHistory(f"http://127.0.0.1:{free_port()}", timeout_s=2).history("gpu", "temp_c", 0, 600)
    with pytest.raises(HistoryError, match="not http"):
        PromHistory("prom:9090")


def test_nan_and_inf_values_become_gaps(canned) -> None:
    canned.body = (b'{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"node":"a","gpu":"2"},'
                   b'"values":[[10,"1.5"],[25,"NaN"],[40,"+Inf"]]}]}}')
    [s] = PromHistory(canned.url).history("gpu", "temp_c", 0, 600)  # type: ignore[attr-defined]
    assert s.key == ("a", "gpu2", "temp_c") and s.times.tolist() == [10, 25, 40]
    assert s.values[0] == 1.5 and np.isnan(s.values[1:]).all()
