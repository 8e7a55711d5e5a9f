"""Fuzzing the HTTP API from its own OpenAPI schema with schemathesis: valid and invalid requests
for every operation, and valid ones aimed at a collection that exists. Used by the in-process
unit test and the test against a running `bienc serve`.

Drives hypothesis directly (not schemathesis' pytest plugin) so that it needs nothing from
pytest's internals."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode


@dataclass
class FuzzReport:
    statuses: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    def operations(self) -> set[str]:
        return {label for label, _, _ in self.statuses}

    def summary(self) -> str:
        per_op: Counter[str] = Counter()
        for (label, _, _), n in self.statuses.items():
            per_op[label] += n
        return f"{self.requests} requests: " + ", ".join(f"{k} {v}" for k, v in sorted(per_op.items()))


def fuzz(schema: Any, call: Callable[[Any], Any], *, max_examples: int, timeout_s: float,
         existing: dict[str, str] | None = None) -> FuzzReport:
    """Call every operation of `schema` with generated cases; record any 5xx, slow or non-JSON
    answer. `existing`: path parameters (e.g. a collection) for one more, positive, pass."""
    report = FuzzReport()
    for result in schema.get_all_operations():
        operation = result.ok()
        passes: list[tuple[str, GenerationMode, dict[str, Any]]] = [
            ("positive", GenerationMode.POSITIVE, {}), ("negative", GenerationMode.NEGATIVE, {})]
        fixed = {k: v for k, v in (existing or {}).items() if "{" + k + "}" in operation.path}
        if fixed and operation.method.upper() != "DELETE":
            passes.append(("existing", GenerationMode.POSITIVE, fixed))
        for name, mode, path_parameters in passes:
            _run_pass(operation, name, mode, path_parameters, call, max_examples, timeout_s, report)
    return report


def _run_pass(operation: Any, name: str, mode: GenerationMode, path_parameters: dict[str, Any],
              call: Callable[[Any], Any], max_examples: int, timeout_s: float,
              report: FuzzReport) -> None:
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters or None)

    @settings(max_examples=max_examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(case: Any) -> None:
        started = time.monotonic()
        response = call(case)
        elapsed = time.monotonic() - started
        report.statuses[(operation.label, name, response.status_code)] += 1
        content_type = response.headers.get("content-type") or ""
        if isinstance(content_type, list):  # schemathesis' Response: every header is a list
            content_type = content_type[0] if content_type else ""
        problem = None
        if response.status_code >= 500:
            problem = f"status {response.status_code}: {response.text[:300]}"
        elif elapsed > timeout_s:
            problem = f"took {elapsed:.1f} s"
        elif not content_type.startswith(("application/json", "text/plain", "application/x-tar")):
            problem = f"content type {content_type!r}"
        if problem:
            report.failures.append(f"{operation.label} ({name}) {problem}; path "
                                   f"{case.path_parameters!r} body {str(case.body)[:300]}")

    with contextlib.suppress(Unsatisfiable):  # nothing to vary, or nothing invalid to make
        run()
