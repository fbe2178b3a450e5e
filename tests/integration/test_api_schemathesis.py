"""Schemathesis against the OpenAPI spec of the served API: no input makes it answer 5xx.

Each operation gets a bounded number of generated requests (valid ones, and invalid ones where
the spec allows generating them) with an admin key, so writes reach Kafka and reads reach
PostgreSQL. The figures are printed at the end: operations, examples, server errors.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
import schemathesis
from api_harness import served, spec, unique
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from services.api.app import create_app
from services.api.auth import create_key
from services.common.db import make_engine
from services.common.settings import StackSettings

EXAMPLES = 20


def fuzz(url: str, key: str) -> tuple[int, Counter[int], list[str]]:
    import httpx

    schema = schemathesis.openapi.from_dict(httpx.get(f"{url}/openapi.json").json())
    auth = {"Authorization": f"Bearer {key}"}
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def run(case: Any) -> None:
                response = case.call(base_url=url, headers=auth)
                statuses[response.status_code] += 1
                if response.status_code >= 500:
                    failures.append(
                        f"{case.method} {case.formatted_path}: {response.status_code} "
                        f"{case.body!r} -> {response.text[:300]}"
                    )

            try:
                run()
            except Unsatisfiable:
                # No invalid request exists for this operation (e.g. no parameters at all).
                if mode is GenerationMode.POSITIVE:
                    raise
    return operations, statuses, failures


# Schemathesis' own strategies trip a Hypothesis deprecation (random inside a strategy).
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
async def test_no_generated_request_gets_a_5xx(
    kafka_bootstrap: str, topic_prefix: str, database_url: str
) -> None:
    engine = make_engine(database_url)
    key = create_key(engine, "fuzzer", "admin", [])
    engine.dispose()
    app = create_app(StackSettings(kafka_bootstrap, database_url, topic_prefix), None, True)
    tenant = unique("fuzz")

    def scenario() -> tuple[int, Counter[int], list[str]]:
        import httpx

        with served(app) as url:
            created = httpx.post(
                f"{url}/v1/tenants/{tenant}/budgets",
                json={"budget_id": unique("org"), "spec": spec(1000), "reason": "seed"},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert created.status_code == 201, created.text
            return fuzz(url, key)

    operations, statuses, failures = await asyncio.to_thread(scenario)
    examples = sum(statuses.values())
    print(
        f"schemathesis: {operations} operations, {examples} examples, "
        f"{len(failures)} server errors; statuses {dict(sorted(statuses.items()))}"
    )
    assert operations >= 14
    assert examples >= operations * EXAMPLES
    assert failures == []
