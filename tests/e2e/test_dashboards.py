"""Metrics (issue 13): the dashboards and alert rules in ``infra/grafana`` name only metrics a live
``caas serve`` and ``caas worker`` export; the per-tenant counters label at most the top N
tenants plus ``other``; ``/metrics`` is refused without a token, on the public port, on the admin
port (``CAAS_METRICS_PORT``) and on the worker's (``CAAS_WORKER_METRICS_PORT``).

Each test runs a fresh server of its own (embedded, or a worker and a node on the test Kafka and
MongoDB-wire server), because the counters it reads are the whole process's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from websockets.asyncio.client import connect

from tests.cluster import Cluster
from tests.support import ADMIN, Server, Tenant, bearer, free_port, new_tenant

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "infra" / "grafana"
TOKEN = "test-scrape-token"
WAIT = 60.0

# PromQL's functions, aggregation operators and keywords (https://prometheus.io/docs/prometheus/latest/querying/)
PROMQL_WORDS = frozenset(
    """
    abs absent absent_over_time acos acosh asin asinh atan atanh avg avg_over_time bottomk by ceil changes clamp
    clamp_max clamp_min count count_over_time count_values cos cosh day_of_month day_of_week day_of_year
    days_in_month deg delta deriv exp floor group group_left group_right histogram_avg histogram_count
    histogram_fraction histogram_quantile histogram_stddev histogram_stdvar histogram_sum holt_winters hour
    idelta ignoring increase irate label_join label_replace last_over_time limitk limit_ratio ln log10 log2
    mad_over_time max max_over_time min min_over_time minute month on offset pi predict_linear present_over_time
    quantile quantile_over_time rad rate resets round scalar sgn sin sinh sort sort_by_label sort_by_label_desc
    sort_desc sqrt stddev stddev_over_time stdvar stdvar_over_time sum sum_over_time tan tanh time timestamp
    topk vector without year and or unless bool inf nan atan2
    """.split()  # noqa: SIM905
)
# Metrics only a Kafka cluster has (its consumers and deciders)
KAFKA_ONLY = frozenset({"caas_consumer_lag_messages", "caas_decider_stalled"})


# --- reading the files ---------------------------------------------------------------------------
def expressions() -> dict[str, list[str]]:
    """Every PromQL expression of every dashboard and rule file, by file."""
    found: dict[str, list[str]] = {}
    for path in sorted((GRAFANA / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        exprs = [t["expr"] for panel in board["panels"] for t in panel["targets"]]
        for variable in board["templating"]["list"]:  # label_values(<selector>, label): the selector is PromQL
            match = re.fullmatch(r"label_values\((.*),\s*\w+\)", str(variable.get("query", "")))
            if match:
                exprs.append(match.group(1))
        found[path.name] = exprs
    for path in sorted((GRAFANA / "prometheus").glob("*.yml")):
        rules = yaml.safe_load(path.read_text())
        found[path.name] = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers followed by ``{``, ``(``, ``[``,
    whitespace, an operator or the end, less PromQL's own words, label names (in selectors and
    in ``by``/``without``/``on``/``ignoring``/``group_*`` lists), strings, durations and
    Grafana's ``$variables``."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # strings
    text = re.sub(r"\$\{?\w+\}?", "", text)  # $__rate_interval, ${datasource}
    text = re.sub(r"\{[^}]*\}", "{}", text)  # selectors: label matchers
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", text)  # label lists
    text = re.sub(r"\[[^\]]*\]", "[]", text)  # ranges and subqueries
    names = set()
    for match in re.finditer(r"(?<![\w.:])([A-Za-z_:][\w:]*)(?=\s*(?:[{(\[]|$|[\s)+\-*/^%<>=!,]))", text):
        word = match.group(1)
        if word not in PROMQL_WORDS:
            names.add(word)
    return names


def named() -> dict[str, set[str]]:
    """Every metric name the files name, with the files that name it."""
    out: dict[str, set[str]] = {}
    for name, exprs in expressions().items():
        for expr in exprs:
            for metric in metric_names(expr):
                out.setdefault(metric, set()).add(name)
    return out


def test_the_promql_reader_finds_metric_names_only() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, route) (rate(caas_http_request_seconds_bucket{job=~"$job", '
        'route="/v1/x"}[5m]))) / on(job) group_left sum(caas_a_total) > 0 and caas_b offset 5m'
    )
    assert metric_names(expr) == {"caas_http_request_seconds_bucket", "caas_a_total", "caas_b"}
    assert metric_names('{__name__=~"caas_.*"}') == set()
    files = named()
    assert {"caas-alerts.yml", "caas-tenants.json", "caas-kafka.json"} <= set().union(*files.values())
    # every name is ours: a PromQL word the reader missed would show up here
    assert all(name.startswith("caas_") for name in files), sorted(files)


def test_dashboards_and_rules_are_well_formed() -> None:
    """What Grafana and Prometheus need to load them: panels with unique ids and lettered
    queries on the data source variable; rules with a name, an expression, a severity, a summary
    and the page that says what to do."""
    boards = sorted((GRAFANA / "dashboards").glob("*.json"))
    assert {path.stem for path in boards} == {
        "caas-api", "caas-websockets", "caas-kafka", "caas-projections", "caas-tenants"
    }  # fmt: skip
    for path in boards:
        board = json.loads(path.read_text())
        assert board["uid"] == path.stem and board["title"].startswith("CAAS / ")
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), path.name
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], (path.name, panel["title"])
            assert [t["refId"] for t in panel["targets"]] == [chr(65 + i) for i in range(len(panel["targets"]))]
    alerts = set()
    for path in sorted((GRAFANA / "prometheus").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
                assert rule["annotations"]["summary"] and rule["annotations"]["runbook"] == "docs/operations.md#alerts"
                alerts.add(rule["alert"])
    documented = (ROOT / "docs" / "operations.md").read_text()
    assert alerts and all(f"`{alert}`" in documented for alert in alerts)


# --- scraping ------------------------------------------------------------------------------------
def exported(text: str) -> set[str]:
    """The metric names a Prometheus text exposition has samples of (a metric declared with no
    sample does not count: a panel or a rule on it would show nothing)."""
    return {re.split(r"[{ ]", line, maxsplit=1)[0] for line in text.splitlines() if line and not line.startswith("#")}


def documented(name: str) -> bool:
    """Whether docs/operations.md names the metric ``name`` is a sample of."""
    page = (ROOT / "docs" / "operations.md").read_text()
    base = re.sub(r"_(bucket|sum|count|created)$", "", name)
    return any(f"`{candidate}`" in page for candidate in (name, base, base + "_total"))


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples of ``name``: (labels, value)."""
    found = []
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(1) or ""))
            found.append((labels, float(match.group(2))))
    return found


def scrape(url: str, token: str = TOKEN) -> str:
    r = httpx.get(url, headers=bearer(token), timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


def until(check: Any, what: str, timeout: float = WAIT) -> Any:
    """``check()`` once it returns something true, within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.2)


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code in (401, 403), response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] in ("unauthenticated", "forbidden")
    assert "caas_" not in response.text


# --- traffic -------------------------------------------------------------------------------------
def chat(client: httpx.Client, tenant: Tenant, posts: int) -> str:
    """A user and a channel of ``tenant``, ``posts`` messages in it; the user's token."""
    token = tenant.user(client, "alice")
    r = client.post(f"{tenant.url}/v1/channels", json={"channel_id": "room", "members": ["alice"]},
                    headers=tenant.headers())  # fmt: skip
    assert r.status_code == 201, r.text
    for i in range(posts):
        r = client.post(f"{tenant.url}/v1/channels/room/messages", json={"text": f"m{i}"}, headers=bearer(token))
        assert r.status_code == 201, r.text
    return token


async def deliver_one(server: Server, client: httpx.Client, tenant: Tenant, token: str) -> None:
    """A message delivered live to a subscribed socket (a delivery, a subscription, a socket)."""
    async with connect(f"{server.ws_url}?token={token}", proxy=None, open_timeout=WAIT) as ws:
        await ws.send(json.dumps({"type": "subscribe", "channel_id": "room"}))
        while json.loads(await asyncio.wait_for(ws.recv(), WAIT))["type"] != "subscribed":
            pass
        r = client.post(f"{tenant.url}/v1/channels/room/messages", json={"text": "live"}, headers=bearer(token))
        assert r.status_code == 201, r.text
        while (frame := json.loads(await asyncio.wait_for(ws.recv(), WAIT)))["type"] != "event":
            pass
        assert frame["event"]["payload"]["text"] == "live"


async def traffic(server: Server) -> Tenant:
    with httpx.Client(timeout=WAIT) as client:
        tenant = new_tenant(client, server.url)
        token = chat(client, tenant, posts=3)
        r = client.get(f"{server.url}/v1/channels/room/messages", headers=bearer(token))
        assert r.status_code == 200, r.text
        await deliver_one(server, client, tenant, token)
        assert client.get(f"{server.url}/readyz").status_code == 200
        return tenant


@pytest.fixture(params=["embedded", "kafka"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.contextmanager
def start(backend: str, root: Path, env: dict[str, str]) -> Iterator[tuple[Server, str | None]]:
    """A server of ``backend`` (and on Kafka the worker's metrics address), stopped after."""
    env = {"CAAS_METRICS_TOKEN": TOKEN, **env}
    if backend == "embedded":
        server = Server(root / "data", env=env).start()
        try:
            yield server, None
        finally:
            server.stop()
        return
    worker_port = free_port()
    cluster = Cluster(root, env={**env, "CAAS_WORKER_METRICS_PORT": str(worker_port)}).start()
    try:
        yield cluster.nodes[0], f"http://127.0.0.1:{worker_port}/metrics"
    finally:
        cluster.stop()


# --- the tests -----------------------------------------------------------------------------------
async def test_every_metric_the_dashboards_and_rules_name_is_exported(backend: str, tmp_path: Path) -> None:
    with start(backend, tmp_path, {}) as (server, worker):
        tenant = await traffic(server)
        served = scrape(f"{server.url}/metrics")
        have = exported(served)
        if worker is not None:
            address = worker

            def reported() -> str | None:
                text = scrape(address)
                consumers = {labels["consumer"] for labels, _ in samples(text, "caas_consumer_lag_messages")}
                return text if {"deciders", "projectors"} <= consumers else None

            text = until(reported, "the worker's consumers report their lag")
            have |= exported(text)
            consumers = {labels["consumer"] for labels, _ in samples(text, "caas_consumer_lag_messages")}
            assert {"deciders", "projectors"} <= consumers
            up = {labels["processor"]: value for labels, value in samples(text, "caas_processor_up")}
            assert up == {"deciders": 1.0, "read-models": 1.0}
            assert {labels["partition"] for labels, _ in samples(text, "caas_decider_stalled")} == {"0"}
            assert {labels["consumer"] for labels, _ in samples(served, "caas_consumer_lag_messages")} == {"node"}
        else:
            up = {labels["processor"]: value for labels, value in samples(served, "caas_processor_up")}
            assert up == {"projections": 1.0}
        wanted = named()
        if worker is None:
            wanted = {name: files for name, files in wanted.items() if name not in KAFKA_ONLY}
        missing = {name: sorted(files) for name, files in wanted.items() if name not in have}
        assert not missing, f"named by dashboards or rules but not exported: {missing}"
        undocumented = sorted(name for name in have if name.startswith("caas_") and not documented(name))
        assert not undocumented, f"exported but not in docs/operations.md: {undocumented}"
        # the traffic shows in the tenant's own series (fewer tenants than places: each has its label)
        for family in ("caas_tenant_requests_total", "caas_tenant_messages_total", "caas_tenant_deliveries_total"):
            mine = [value for labels, value in samples(served, family) if labels["tenant"] == tenant.tenant_id]
            assert mine and mine[0] >= 1, family
        messages = [
            v for labels, v in samples(served, "caas_tenant_messages_total") if labels["tenant"] == tenant.tenant_id
        ]
        assert messages == [4.0]  # three posted, one delivered live


async def test_per_tenant_counters_label_the_top_tenants_and_count_the_rest_as_other(
    backend: str, tmp_path: Path
) -> None:
    top, heavy, light = 5, 5, 25
    with start(backend, tmp_path, {"CAAS_METRICS_TENANT_TOP": str(top)}) as (server, _):
        with httpx.Client(timeout=WAIT) as client:
            tenants = [new_tenant(client, server.url, f"t{i}") for i in range(heavy + light)]
            for i, tenant in enumerate(tenants):
                chat(client, tenant, posts=3 if i < heavy else 1)
        text = scrape(f"{server.url}/metrics")
        heavy_ids = {t.tenant_id for t in tenants[:heavy]}
        for family in ("caas_tenant_requests_total", "caas_tenant_messages_total"):
            found = dict((labels["tenant"], value) for labels, value in samples(text, family))
            assert len(found) <= top + 1, found
            assert set(found) == heavy_ids | {"other"}, found  # the busiest tenants have the places
        messages = dict((labels["tenant"], value) for labels, value in samples(text, "caas_tenant_messages_total"))
        assert sum(messages.values()) == heavy * 3 + light  # every message counted once, labelled or not
        assert messages["other"] == light
        # each tenant made 3 + posts requests with its key or its user's token
        requests = dict((labels["tenant"], value) for labels, value in samples(text, "caas_tenant_requests_total"))
        assert sum(requests.values()) == heavy * (3 + 3) + light * (3 + 1)


async def test_metrics_are_refused_without_a_token_on_every_port(backend: str, tmp_path: Path) -> None:
    metrics_port = free_port()
    with start(backend, tmp_path, {"CAAS_METRICS_PORT": str(metrics_port)}) as (server, worker):
        admin = f"http://127.0.0.1:{metrics_port}/metrics"
        with httpx.Client(timeout=WAIT) as client:
            # with an admin port, the public port has no /metrics at all
            r = client.get(f"{server.url}/metrics", headers=bearer(ADMIN))
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text
            for url in [admin, *([worker] if worker else [])]:
                for headers in (
                    {},
                    bearer("garbage"),
                    bearer(TOKEN + "x"),
                    {"authorization": "Basic YWRtaW46YWRtaW4="},
                ):
                    assert_refused(client.get(url, headers=headers))
                for token in (TOKEN, ADMIN):
                    assert "caas_processor_up" in scrape(url, token)
                r = client.get(url.replace("/metrics", "/other"), headers=bearer(TOKEN))
                assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
                r = client.post(url, headers=bearer(TOKEN))
                assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
