"""Queries before documents in one process: a query is never held behind documents being
tokenised, and document batches wait to start while a query is encoded."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bienc.encoding.encoder import QUERY_YIELD_S, Encoder
from bienc.encoding.openvino import DOCUMENT_NICE

TEXTS = ["How do plants make energy from light?", "Tides follow the moon.",
         "A short history of jazz in New Orleans."]


def _in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    done: list[Any] = []
    thread = threading.Thread(target=lambda: done.append(work()), daemon=True)
    thread.start()
    return thread, done


def test_a_query_does_not_wait_for_documents_being_tokenised(
        encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_query_cache(encoder, monkeypatch)
    expected = encoder.encode_documents(TEXTS)
    with encoder._tokenizer_lock:  # as while a window of documents is tokenised
        thread, done = _in_thread(lambda: encoder.encode_queries(TEXTS))
        thread.join(timeout=60)
        assert done, "the query waited for the documents' tokenizer"
    # the queries' own tokenizer prepares the same model inputs as the documents'
    assert np.einsum("ij,ij->i", done[0], expected).min() > 0.9999


def _slow_queries(encoder: Encoder, monkeypatch: pytest.MonkeyPatch
                  ) -> tuple[threading.Event, threading.Event, list[float]]:
    """Queries held in the runner until `release` is set (the cores busy with them): returns
    the events (a query entered, release) and when the queries were released."""
    entered, release = threading.Event(), threading.Event()
    real_query = encoder._query_runner
    released_at: list[float] = []

    def slow_query(features: Mapping[str, Any]) -> np.ndarray:
        entered.set()
        release.wait(timeout=60)
        released_at.append(time.monotonic())
        return real_query(features)

    monkeypatch.setattr(encoder, "_query_runner", slow_query)
    _no_query_cache(encoder, monkeypatch)
    return entered, release, released_at


def _no_query_cache(encoder: Encoder, monkeypatch: pytest.MonkeyPatch, size: int = 0) -> None:
    monkeypatch.setattr(encoder, "_query_cache", type(encoder._query_cache)())
    monkeypatch.setattr(encoder, "_query_cache_size", size)


def test_document_batches_wait_to_start_while_a_query_is_encoded(
        encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    entered, release, released_at = _slow_queries(encoder, monkeypatch)

    started_at: list[float] = []
    real_start = encoder._start

    def recording_start(features: Mapping[str, Any]) -> Callable[[], np.ndarray]:
        started_at.append(time.monotonic())
        return real_start(features)

    monkeypatch.setattr(encoder, "_start", recording_start)
    query, answered = _in_thread(lambda: encoder.encode_queries(TEXTS[:1]))
    assert entered.wait(timeout=60)
    documents, encoded = _in_thread(lambda: encoder.encode_documents(TEXTS))
    time.sleep(QUERY_YIELD_S / 2)  # the documents reach their first batch meanwhile
    release.set()
    query.join(timeout=60)
    documents.join(timeout=60)
    assert answered and encoded
    assert started_at and started_at[0] >= released_at[0], \
        "a document batch started while a query was being encoded"


def test_queries_that_never_end_slow_documents_down_but_do_not_stop_them(
        encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    entered, release, _ = _slow_queries(encoder, monkeypatch)
    query, _ = _in_thread(lambda: encoder.encode_queries(TEXTS[:1]))
    try:
        assert entered.wait(timeout=60)
        documents, encoded = _in_thread(lambda: encoder.encode_documents(TEXTS))
        documents.join(timeout=60)
        assert encoded and encoded[0].shape == (3, encoder.dimension)
    finally:
        release.set()
        query.join(timeout=60)


def test_a_repeated_query_costs_no_encoding_and_the_least_recent_is_forgotten(
        encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_query_cache(encoder, monkeypatch, size=2)
    first = encoder.encode_queries(TEXTS[:2])
    calls = encoder.calls
    again = encoder.encode_queries([TEXTS[1], TEXTS[0]])
    assert encoder.calls == calls
    assert np.array_equal(again, first[::-1])
    encoder.encode_queries([TEXTS[2]])  # a third query: the least recently used one goes
    assert encoder.calls == calls + 1
    encoder.encode_queries([TEXTS[0]])
    assert encoder.calls == calls + 1  # used last of the first two: kept
    encoder.encode_queries([TEXTS[1]])
    assert encoder.calls == calls + 2


def _wait_for(condition: Callable[[], bool], timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_queries_waiting_for_the_encoder_share_one_forward_pass(
        encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    alone = encoder.encode_queries(TEXTS)  # one by one below: each its own caller
    entered, release, _ = _slow_queries(encoder, monkeypatch)
    passes = encoder.query_passes
    first, first_done = _in_thread(lambda: encoder.encode_queries(TEXTS[:1]))
    assert entered.wait(timeout=60)
    waiting = [_in_thread(lambda text=text: encoder.encode_queries([text])) for text in TEXTS]  # type: ignore[misc]
    assert _wait_for(lambda: len(encoder._waiting) == len(TEXTS)), "the queries did not queue"
    release.set()
    for thread, _ in [(first, first_done), *waiting]:
        thread.join(timeout=60)
    assert encoder.query_passes == passes + 2  # the first query, then the three together
    assert first_done and np.dot(first_done[0][0], alone[0]) > 0.9999
    for row, (_, done) in enumerate(waiting):
        assert done and done[0].shape == (1, encoder.dimension)
        # each caller gets its own query's vector, the same as encoded alone
        assert np.dot(done[0][0], alone[row]) > 0.9999


def test_when_a_shared_pass_fails_each_of_its_callers_is_told_and_the_next_query_works(
        encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    entered, release, _ = _slow_queries(encoder, monkeypatch)
    slow = encoder._query_runner

    def failing(features: Mapping[str, Any]) -> np.ndarray:
        if features["input_ids"].shape[0] > 1:  # the shared pass
            raise RuntimeError("the runner failed")
        return slow(features)

    monkeypatch.setattr(encoder, "_query_runner", failing)
    errors: list[BaseException] = []

    def query(texts: list[str]) -> np.ndarray | None:
        try:
            return encoder.encode_queries(texts)
        except RuntimeError as error:
            errors.append(error)
            return None

    first, first_done = _in_thread(lambda: query(TEXTS[:1]))
    assert entered.wait(timeout=60)
    waiting = [_in_thread(lambda text=text: query([text])) for text in TEXTS[1:]]  # type: ignore[misc]
    assert _wait_for(lambda: len(encoder._waiting) == 2)
    release.set()
    for thread, _ in [(first, first_done), *waiting]:
        thread.join(timeout=60)
    assert first_done[0] is not None
    assert [done for _, done in waiting] == [[None], [None]]
    assert len(errors) == 2 and all("the runner failed" in str(e) for e in errors)
    assert not encoder._waiting
    assert encoder.encode_queries(TEXTS[2:]).shape == (1, encoder.dimension)


def _cpu_ticks_by_thread() -> dict[int, tuple[int, int]]:
    """This process's threads: id -> (CPU ticks used, nice)."""
    threads = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # ended meanwhile
            continue
        threads[int(tid)] = (int(fields[11]) + int(fields[12]), int(fields[16]))
    return threads


def _busy_threads(work: Callable[[], Any]) -> list[tuple[int, int]]:
    """(CPU ticks, nice) of the threads that did a share of `work` (a fifth of the busiest
    one's CPU time at least), busiest first."""
    before = _cpu_ticks_by_thread()
    work()
    after = _cpu_ticks_by_thread()
    used = sorted(((ticks - before.get(tid, (0, 0))[0], nice) for tid, (ticks, nice) in after.items()),
                  reverse=True)
    return [(ticks, nice) for ticks, nice in used if ticks > 0 and ticks * 5 >= used[0][0]]


@pytest.mark.skipif(sys.platform != "linux", reason="thread priorities are Linux's")
def test_documents_are_encoded_by_threads_of_lower_priority_than_queries(
        encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    if encoder.backend != "openvino":
        pytest.skip("the document streams' priority is OpenVINO's")
    _no_query_cache(encoder, monkeypatch)
    documents = [f"{TEXTS[i % 3]} Paragraph {i} goes on about it at some length. " * 8 for i in range(96)]
    busy = _busy_threads(lambda: encoder.encode_documents(documents))
    assert busy and {nice for _, nice in busy} == {DOCUMENT_NICE}, busy
    queries = [f"{TEXTS[i % 3]} ({i})" for i in range(60)]
    busy = _busy_threads(lambda: [encoder.encode_queries([q]) for q in queries])
    # the calling thread and OpenVINO's own, at the process's priority
    assert busy and {nice for _, nice in busy} == {os.getpriority(os.PRIO_PROCESS, 0)}, busy


def test_a_caller_whose_queries_were_encoded_returns_without_waiting_for_the_next_pass(
        encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    """B and F wait while A's pass runs, then go in one pass; N comes during that pass and
    leads the next, which does not end until the test says so: B and F return meanwhile."""
    _no_query_cache(encoder, monkeypatch)
    gates = [threading.Event() for _ in range(3)]
    started: list[int] = []
    real_query = encoder._query_runner

    def gated(features: Mapping[str, Any]) -> np.ndarray:
        number = len(started)
        started.append(number)
        gates[number].wait(timeout=60)
        return real_query(features)

    monkeypatch.setattr(encoder, "_query_runner", gated)
    a, _ = _in_thread(lambda: encoder.encode_queries(["a"]))
    assert _wait_for(lambda: len(started) == 1)
    b, b_done = _in_thread(lambda: encoder.encode_queries([TEXTS[0]]))
    f, f_done = _in_thread(lambda: encoder.encode_queries([TEXTS[1]]))
    assert _wait_for(lambda: len(encoder._waiting) == 2)
    gates[0].set()
    assert _wait_for(lambda: len(started) == 2)  # B's and F's pass
    n, n_done = _in_thread(lambda: encoder.encode_queries([TEXTS[2]]))
    assert _wait_for(lambda: len(encoder._waiting) == 1)
    gates[1].set()
    try:
        b.join(timeout=30)
        f.join(timeout=30)
        assert b_done and f_done, "an answered caller waited for the next pass"
        assert _wait_for(lambda: len(started) == 3)  # N leads the next pass, held
        assert not n_done
    finally:
        gates[2].set()
        for thread in (a, n):
            thread.join(timeout=60)
    assert n_done and n_done[0].shape == (1, encoder.dimension)
