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


def fuzz(url: str, key: str, seeded: dict[str, str]) -> tuple[int, Counter[int], list[str]]:
    """Random requests (valid and invalid), then valid ones aimed at a seeded tree, so bodies
    reach the allocation rules rather than stopping at 404."""
    import httpx

    schema = schemathesis.openapi.from_dict(httpx.get(f"{url}/openapi.json").json())
    auth = {"Authorization": f"Bearer {key}"}
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        names = {p.name for p in operation.path_parameters}
        aimed = {k: v for k, v in seeded.items() if k in names}
        passes = [(GenerationMode.POSITIVE, None), (GenerationMode.NEGATIVE, None)]
        if aimed:
            passes.append((GenerationMode.POSITIVE, aimed))
        for mode, path_parameters in passes:

            @given(
                case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)
            )
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
    tenant, org, child = unique("fuzz"), unique("org"), unique("child")

    def scenario() -> tuple[int, Counter[int], list[str]]:
        import httpx

        with served(app) as url:
            for budget_id, body in (
                (org, spec(10**6)),
                (child, spec(10**5, org, overflow_cap_tokens=10**5)),
            ):
                created = httpx.post(
                    f"{url}/v1/tenants/{tenant}/budgets",
                    json={"budget_id": budget_id, "spec": body, "reason": "seed"},
                    headers={"Authorization": f"Bearer {key}"},
                )
                assert created.status_code == 201, created.text
            return fuzz(url, key, {"tenant": tenant, "budget_id": child})

    operations, statuses, failures = await asyncio.to_thread(scenario)
    examples = sum(statuses.values())
    print(
        f"schemathesis: {operations} operations, {examples} examples, "
        f"{len(failures)} server errors; statuses {dict(sorted(statuses.items()))}"
    )
    assert operations >= 14
    assert examples >= 2 * operations * EXAMPLES
    assert failures == []
