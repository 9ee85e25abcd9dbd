"""Metrics on their own: each method moves its series, labels stay bounded, the null object keeps up."""

from __future__ import annotations

import inspect

from _ops_helpers import Samples
from prometheus_client import REGISTRY

from fabstir_node.config import Settings
from fabstir_node.errors import StorageNotFound, StorageTooLarge, StorageUnavailable
from fabstir_node.server.metrics import NULL_METRICS, Metrics, NullMetrics, metrics_of
from fabstir_node.service.node import Node
from fabstir_node.storage.local import LocalStore


def _samples(metrics: Metrics) -> Samples:
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain")
    return Samples(body.decode())


def test_load_outcomes():
    metrics = Metrics(process=False)
    metrics.load_started()
    metrics.load_finished("success", 1.5, vectors=1000)
    metrics.load_finished("TIMEOUT", 300.0)
    metrics.load_finished("CHUNK_DOWNLOAD_FAILED", 2.0)
    metrics.load_finished("cancelled", 0.5)
    metrics.load_finished("<script>", 0.1)  # never a new label value
    s = _samples(metrics)
    assert s["vector_loading_started_total"] == 1
    assert s["vector_loading_success_total"] == 1
    assert s["s5_vectors_loaded_total"] == 1000
    assert s["vector_loading_failure_total"] == 3  # TIMEOUT, CHUNK_DOWNLOAD_FAILED, other
    assert s["vector_loading_timeout_total"] == 1
    for outcome in ("success", "TIMEOUT", "CHUNK_DOWNLOAD_FAILED", "cancelled", "other"):
        assert s[("vector_loading_duration_seconds_count", {"outcome": outcome})] == 1
    # 1.5 s lands in the 2 s bucket, not the 1 s one
    assert s[("vector_loading_duration_seconds_bucket", {"outcome": "success", "le": "1.0"})] == 0
    assert s[("vector_loading_duration_seconds_bucket", {"outcome": "success", "le": "2.0"})] == 1


def test_requests_and_downloads():
    metrics = Metrics(process=False)
    metrics.on_request("SearchVectors", "ok", 0.003)
    metrics.on_request("SearchVectors", "NO_VECTORS", 0.001)
    metrics.on_request("SearchVectors", "made-up", 0.001)
    metrics.download(0.2)
    metrics.download(0.1, StorageNotFound("p", "no such object"))
    metrics.download(0.1, StorageUnavailable("p", "down"))
    metrics.download(0.1, StorageTooLarge("p", "big"))
    metrics.download(0.1, RuntimeError("bug"))
    metrics.index_build(0.4)
    metrics.cache_miss()
    metrics.cache_hit()
    metrics.cache_hit()
    metrics.cache_state(entries=3, nbytes=4096)
    s = _samples(metrics)
    messages = "fabstir_websocket_messages_total"
    assert s[(messages, {"type": "SearchVectors", "outcome": "ok"})] == 1
    assert s[(messages, {"type": "SearchVectors", "outcome": "NO_VECTORS"})] == 1
    assert s[(messages, {"type": "SearchVectors", "outcome": "other"})] == 1
    none = {"backend": "none"}
    assert s[("s5_download_duration_seconds_count", none)] == 5
    for kind in ("not_found", "unavailable", "too_large", "other"):
        assert s[("s5_download_errors_total", {"backend": "none", "kind": kind})] == 1
    assert s["vector_index_build_duration_seconds_count"] == 1
    assert s["vector_index_cache_hits_total"] == 2 and s["vector_index_cache_misses_total"] == 1
    assert s["vector_index_cache_entries"] == 3 and s["vector_index_cache_bytes"] == 4096


async def test_storage_hooks_count_real_bytes_and_keep_earlier_hooks(tmp_path):
    store = LocalStore(tmp_path)
    seen: list[tuple[str, int]] = []
    store.stats.on_bytes = lambda backend, count: seen.append((backend, count))
    node = Node(Settings(store_dir=tmp_path), storage=store)
    metrics = Metrics(node, process=False)
    await store.put("home/x/manifest.json", b"12345")
    assert await store.get("home/x/manifest.json") == b"12345"
    store.stats.record_retry("local", "home/x/manifest.json", 1, "flaky")
    s = _samples(metrics)
    assert s[("s5_download_bytes_total", {"backend": "local"})] == 10
    assert s[("s5_download_retries_total", {"backend": "local"})] == 1
    assert seen == [("local", 5), ("local", 5)]


def test_gauges_are_read_from_the_node(tmp_path):
    node = Node(Settings(store_dir=tmp_path), storage=LocalStore(tmp_path))
    metrics = Metrics(node, process=False)
    node.metrics = metrics
    node.on_connection(+1)
    node.on_connection(+1)
    node.on_connection(-1)
    s = _samples(metrics)
    assert s["fabstir_websocket_connections"] == 1
    assert s["fabstir_websocket_connections_opened_total"] == 2
    assert s["fabstir_sessions"] == 0


def test_two_daemons_never_share_series():
    first, second = Metrics(process=False), Metrics(process=False)
    first.observe_search(0.01)
    assert _samples(first)["vector_search_duration_seconds_count"] == 1
    assert _samples(second)["vector_search_duration_seconds_count"] == 0
    assert REGISTRY.get_sample_value("vector_search_duration_seconds_count") is None


def test_searches_are_counted_by_how_they_were_answered():
    metrics = Metrics(process=False)
    for path in ("graph", "graph", "declined", "exact", "something new"):
        metrics.observe_search(0.001, path)
    s = _samples(metrics)
    assert [s[("vector_search_answers_total", {"path": p})] for p in ("graph", "declined", "exact", "other")] == [
        2, 1, 1, 1]


def test_openmetrics_on_request():
    body, content_type = Metrics(process=False).exposition("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


def test_null_metrics_offers_every_method_with_the_same_signature():
    public = {name for name, value in vars(Metrics).items() if callable(value) and not name.startswith("_")}
    public.discard("exposition")
    for name in public:
        assert inspect.signature(getattr(NullMetrics, name)) == inspect.signature(getattr(Metrics, name)), name
    node = Node(Settings())
    assert metrics_of(node) is NULL_METRICS
    NULL_METRICS.load_finished("success", 1.0, 10)  # does nothing, raises nothing
