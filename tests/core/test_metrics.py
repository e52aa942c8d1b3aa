"""GET /metrics: Prometheus text with requests, latency, requests in flight and pool use.

In one process the registry is shared by every app a test run builds, so
these tests compare samples before and after what they do.
"""

import httpx
from prometheus_client.parser import text_string_to_metric_families

from app.core.config import Settings
from tests.support import Account

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_requests_are_counted_by_route_template_method_and_status(
    client: httpx.AsyncClient,
) -> None:
    before = await scrape(client)
    for product_id in (7, 8, 9):
        assert (await client.get(f"/api/v1/products/{product_id}")).status_code == 404
    after = await scrape(client)

    labels = {"method": "GET", "route": "/api/v1/products/{product_id}", "status": "404"}
    assert (
        value(after, "http_requests_total", **labels)
        - value(before, "http_requests_total", **labels)
        == 3
    )
    # Ids never become labels: that would be one time series per product.
    assert not any("/api/v1/products/7" in str(key) for key in after)


async def test_latency_is_a_histogram_per_route(client: httpx.AsyncClient) -> None:
    before = await scrape(client)
    await client.get("/health/live")
    after = await scrape(client)
    labels = {"method": "GET", "route": "/health/live"}
    count = "http_request_duration_seconds_count"
    assert value(after, count, **labels) - value(before, count, **labels) == 1
    infinity = {**labels, "le": "+Inf"}
    bucket = "http_request_duration_seconds_bucket"
    assert value(after, bucket, **infinity) - value(before, bucket, **infinity) == 1
    assert value(after, "http_request_duration_seconds_sum", **labels) > 0


async def test_unmatched_paths_share_one_label(client: httpx.AsyncClient) -> None:
    before = await scrape(client)
    await client.get("/no/such/path/1")
    await client.get("/no/such/path/2")
    after = await scrape(client)
    labels = {"method": "GET", "route": "<unmatched>", "status": "404"}
    assert (
        value(after, "http_requests_total", **labels)
        - value(before, "http_requests_total", **labels)
        == 2
    )


async def test_requests_in_flight_counts_the_scrape_itself(client: httpx.AsyncClient) -> None:
    samples = await scrape(client)
    assert value(samples, "http_requests_in_flight") >= 1


async def test_pool_gauges_follow_the_database_pool(
    client: httpx.AsyncClient, user: Account, settings: Settings
) -> None:
    before = await scrape(client)
    for _ in range(3):
        assert (await client.get("/api/v1/users/me", headers=user.headers)).status_code == 200
    after = await scrape(client)
    assert value(after, "db_pool_capacity") >= sum(settings.pool_limits)
    assert value(after, "db_pool_open_connections") >= 1
    # Every connection a request checked out was given back.
    in_use = "db_pool_connections_in_use"
    assert value(after, in_use) == value(before, in_use)
