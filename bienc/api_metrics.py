"""The API's Prometheus metrics: requests, latencies, documents accepted, queue depth, and the
embedded store's failed index builds."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bienc.config.errors import (
    BiencError,
)
from bienc.queue.celery_app import INGEST_QUEUE


class QueueDepthCollector(Collector):
    """bienc_queue_depth: messages waiting in the ingest queue, read from Redis at scrape."""

    def __init__(self, client: Callable[[], redis.Redis]):
        self._client = client

    def collect(self) -> Iterator[Metric]:
        try:
            depth = float(self._client().llen(INGEST_QUEUE))
        except (redis.RedisError, OSError, BiencError):
            depth = math.nan
        yield GaugeMetricFamily("bienc_queue_depth", "documents batches waiting in the ingest queue",
                                value=depth)


class IndexBuildsCollector(Collector):
    """bienc_index_build_failures and bienc_index_build_retry_seconds, per physical collection:
    the embedded store's index builds that failed in a row (0 once one succeeds) and the time
    until the next try, for the collections open in this process (none before the store is)."""

    def __init__(self, builds: Callable[[], dict[str, dict[str, Any]]]):
        self._builds = builds

    def collect(self) -> Iterator[Metric]:
        failures = GaugeMetricFamily("bienc_index_build_failures",
                                     "index builds of the collection that failed in a row",
                                     labels=["collection"])
        retry = GaugeMetricFamily("bienc_index_build_retry_seconds",
                                  "seconds until a failed index build is tried again",
                                  labels=["collection"])
        for physical, status in sorted(self._builds().items()):
            failures.add_metric([physical], float(status["build_failures"]))
            retry.add_metric([physical], float(status["next_build_retry_s"]))
        yield failures
        yield retry


class Metrics:
    def __init__(self, probe: Callable[[], redis.Redis],
                 builds: Callable[[], dict[str, dict[str, Any]]] = dict):
        self.registry = CollectorRegistry(auto_describe=True)
        self.documents_accepted = Counter(
            "bienc_documents_accepted", "documents accepted for ingest", registry=self.registry)
        self.search_requests = Counter(
            "bienc_search_requests", "search requests that passed validation", registry=self.registry)
        self.search_seconds = Histogram(
            "bienc_search_seconds", "time to answer a search request", registry=self.registry)
        self.encode_seconds = Histogram(
            "bienc_encode_seconds", "time to encode a search request's queries", registry=self.registry)
        self.registry.register(QueueDepthCollector(probe))
        self.registry.register(IndexBuildsCollector(builds))
