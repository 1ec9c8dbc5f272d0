"""History longer than the app's in-memory hour, read from a site's Prometheus.

agentd exports every chartable metric (docs/metrics.md); where a Prometheus scrapes the nodes,
a chart span of 6 h / 24 h / 7 d asks it with a PromQL range query instead of the app's own
ring buffers. No Qt here: :class:`PromHistory` is called from a worker thread and returns
numpy arrays keyed like the app's series (node, scope, metric), so a chart draws them with the
code it uses for live data.

The server is outside the app's control, so everything it says is checked: the response is
read up to ``max_bytes``, must be Prometheus's JSON shape, and every failure becomes a
:class:`HistoryError` whose message names the URL and the remedy.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

import numpy as np

# The app's metrics (scope, name) as PromQL over agentd's exporter. {sel} is the label
# selector the chart's scope makes (node, job_id); {w} a rate window of a few steps.
PROMQL: dict[tuple[str, str], str] = {
    ("node", "cpu_pct"): "100 * fleetdeck_node_cpu_usage_ratio{{{sel}}}",
    ("node", "iowait_pct"): "100 * fleetdeck_node_cpu_iowait_ratio{{{sel}}}",
    ("node", "mem_used_pct"): "100 * fleetdeck_node_memory_used_bytes{{{sel}}} / fleetdeck_node_memory_total_bytes{{{sel}}}",
    ("node", "load_1"): "fleetdeck_node_load1{{{sel}}}",
    ("node", "net_rx_bytes_per_s"): "sum by (node) (rate(fleetdeck_node_network_receive_bytes_total{{{sel}}}[{w}]))",
    ("node", "net_tx_bytes_per_s"): "sum by (node) (rate(fleetdeck_node_network_transmit_bytes_total{{{sel}}}[{w}]))",
    ("node", "disk_read_bytes_per_s"): "sum by (node) (rate(fleetdeck_node_disk_read_bytes_total{{{sel}}}[{w}]))",
    ("node", "disk_write_bytes_per_s"): "sum by (node) (rate(fleetdeck_node_disk_written_bytes_total{{{sel}}}[{w}]))",
    ("gpu", "sm_util_pct"): "100 * fleetdeck_gpu_utilization_ratio{{{sel}}}",
    ("gpu", "mem_used_pct"): "100 * fleetdeck_gpu_memory_used_bytes{{{sel}}} / fleetdeck_gpu_memory_total_bytes{{{sel}}}",
    ("gpu", "power_w"): "fleetdeck_gpu_power_watts{{{sel}}}",
    ("gpu", "temp_c"): "fleetdeck_gpu_temperature_celsius{{{sel}}}",
    ("gpu", "pcie_rx_bytes_per_s"): "fleetdeck_gpu_pcie_receive_bytes_per_second{{{sel}}}",
    ("gpu", "pcie_tx_bytes_per_s"): "fleetdeck_gpu_pcie_transmit_bytes_per_second{{{sel}}}",
    ("gpu", "nvlink_rx_bytes_per_s"): "rate(fleetdeck_gpu_nvlink_receive_bytes_total{{{sel}}}[{w}])",
    ("gpu", "nvlink_tx_bytes_per_s"): "rate(fleetdeck_gpu_nvlink_transmit_bytes_total{{{sel}}}[{w}])",
    ("job", "cpu_pct"): "100 * fleetdeck_job_cpu_usage_cores{{{sel}}}",
    ("job", "mem_current_bytes"): "fleetdeck_job_memory_bytes{{{sel}}}",
    ("job", "io_read_bytes_per_s"): "rate(fleetdeck_job_io_read_bytes_total{{{sel}}}[{w}])",
    ("job", "io_write_bytes_per_s"): "rate(fleetdeck_job_io_written_bytes_total{{{sel}}}[{w}])",
}
MAX_POINTS = 1000  # per series; Prometheus refuses more than 11,000 and a chart is ~1,000 px wide
MIN_STEP_S = 15.0  # a typical scrape interval: finer steps only repeat samples
DEFAULT_MAX_BYTES = 64 * 2**20


class HistoryError(Exception):
    """Prometheus could not answer; the message names the URL and what to do."""


@dataclass(frozen=True)
class HistorySeries:
    """One series of a range query, keyed like the app's series: (node, scope, metric) where
    scope is "" for the node, "gpuN" for a GPU, the job id for a job."""

    key: tuple[str, str, str]
    times: np.ndarray  # wall seconds, float64
    values: np.ndarray  # float32, NaN where Prometheus had no value


def _label_value(text: str) -> str:
    """``text`` as a PromQL string literal body (quotes and backslashes escaped)."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def promql_for(scope: str, name: str, node: str | None = None, job_id: str | None = None,
               step_s: float = MIN_STEP_S) -> str:
    """The PromQL for the app's metric ``(scope, name)`` of one node (or all: None)."""
    sel = []
    if node is not None:
        sel.append(f'node="{_label_value(node)}"')
    if job_id is not None:
        sel.append(f'job_id="{_label_value(job_id)}"')
    if scope == "job" and name.startswith("app:") and name.endswith("_per_s"):
        metric = name[4:-len("_per_s")]
        sel.append(f'metric="{_label_value(metric)}"')
        return f"fleetdeck_job_app_rate_per_second{{{','.join(sel)}}}"
    template = PROMQL.get((scope, name))
    if template is None:
        raise HistoryError(f"the chart metric {scope} {name!r} has no Prometheus equivalent; "
                           f"history beyond the app's hour is available for: "
                           f"{', '.join(sorted({n for _, n in PROMQL}))} and job app:*_per_s rates")
    window = f"{max(4 * step_s, 60.0):.0f}s"
    return template.format(sel=",".join(sel), w=window)


def step_for(span_s: float, points: int = MAX_POINTS) -> float:
    """The query step that gives at most ``points`` per series over ``span_s``."""
    return max(MIN_STEP_S, math.ceil(span_s / points))


def _key(scope: str, name: str, labels: dict[str, str]) -> tuple[str, str, str]:
    node = labels.get("node", "")
    if scope == "gpu":
        return (node, f"gpu{labels.get('gpu', '')}", name)
    if scope == "job":
        return (node, labels.get("job_id", ""), name)
    return (node, "", name)


class PromHistory:
    """Range queries against one Prometheus server (``url``: its base, e.g. http://prom:9090)."""

    def __init__(self, url: str, timeout_s: float = 10.0, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise HistoryError(f"Prometheus URL {url!r} is not http(s)://HOST[:PORT]; "
                               f"set it in the cluster file (prometheus = \"http://prom:9090\")")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes

    def query_range(self, promql: str, start_s: float, end_s: float, step_s: float) -> list[tuple[dict[str, str], np.ndarray, np.ndarray]]:
        """(labels, times, values) per series Prometheus returns for ``promql``."""
        if not (math.isfinite(start_s) and math.isfinite(end_s)) or end_s <= start_s or step_s <= 0:
            raise HistoryError(f"history window {start_s}..{end_s} step {step_s} is empty or invalid")
        query = urllib.parse.urlencode({"query": promql, "start": f"{start_s:.3f}", "end": f"{end_s:.3f}",
                                        "step": f"{step_s:g}"})
        body = self._get(f"{self.url}/api/v1/query_range?{query}")
        return _parse_matrix(body, self.url)

    def history(self, scope: str, name: str, start_s: float, end_s: float, node: str | None = None,
                job_id: str | None = None) -> list[HistorySeries]:
        """The app's metric over [start_s, end_s] for one node (or all), as app series."""
        step = step_for(end_s - start_s)
        promql = promql_for(scope, name, node=node, job_id=job_id, step_s=step)
        return [HistorySeries(_key(scope, name, labels), t, v)
                for labels, t, v in self.query_range(promql, start_s, end_s, step)]

    def _get(self, url: str) -> bytes:
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                body: bytes = resp.read(self.max_bytes + 1)
        except urllib.error.HTTPError as exc:
            with exc:  # holds the connection open until closed
                detail = _error_text(exc.read(4096))
            raise HistoryError(f"Prometheus at {self.url} refused the query (HTTP {exc.code}): {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise HistoryError(f"Prometheus at {self.url} cannot be reached ({reason}); check the URL "
                               f"in the cluster file or settings, or pick a span the app holds (≤ 1 h)") from None
        if len(body) > self.max_bytes:
            raise HistoryError(f"Prometheus at {self.url} sent more than {self.max_bytes // 2**20} MiB for one "
                               f"chart; narrow the chart's scope (one node) or pick a shorter span")
        return body


def _error_text(body: bytes) -> str:
    try:
        data = json.loads(body)
        return str(data.get("error", "")) or body[:200].decode("utf-8", "replace")
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace")


def _parse_matrix(body: bytes, url: str) -> list[tuple[dict[str, str], np.ndarray, np.ndarray]]:
    """Prometheus's ``{"status":"success","data":{"resultType":"matrix","result":[...]}}``."""
    bad = f"Prometheus at {url} answered something that is not a range-query result"
    try:
        data = json.loads(body)
    except ValueError:
        raise HistoryError(f"{bad} (not JSON); is the URL Prometheus's own address?") from None
    if not isinstance(data, dict):
        raise HistoryError(bad)
    if data.get("status") != "success":
        raise HistoryError(f"Prometheus at {url}: {data.get('error') or 'query failed'}")
    result = data.get("data")
    if not isinstance(result, dict) or result.get("resultType") != "matrix" or not isinstance(result.get("result"), list):
        raise HistoryError(bad)
    out = []
    for item in result["result"]:
        if not isinstance(item, dict) or not isinstance(item.get("metric"), dict) or not isinstance(item.get("values"), list):
            raise HistoryError(f"{bad} (a series without metric/values)")
        labels = {str(k): str(v) for k, v in item["metric"].items()}
        times = np.empty(len(item["values"]), dtype=np.float64)
        values = np.empty(len(item["values"]), dtype=np.float32)
        for i, pair in enumerate(item["values"]):
            try:
                t, v = pair
                times[i] = float(t)
                values[i] = float(v)  # "NaN", "+Inf" are valid Prometheus values
            except (TypeError, ValueError):
                raise HistoryError(f"{bad} (value {pair!r} of {labels})") from None
        values[~np.isfinite(values)] = np.nan
        out.append((labels, times, values))
    return out
