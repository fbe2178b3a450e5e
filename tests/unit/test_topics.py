"""Topic settings: facts are kept forever, so any projection can be rebuilt from offset zero."""

from __future__ import annotations

from schemas.topics import ALL, BUDGET_EVENTS, CHARGES, FORECASTS, THRESHOLDS, USAGE
from services.common.kafka import topic_configs


def test_facts_never_expire_and_derived_topics_keep_the_default() -> None:
    for spec in (USAGE, THRESHOLDS, FORECASTS, BUDGET_EVENTS):
        config = topic_configs(spec)
        assert (config["retention.ms"], config["cleanup.policy"]) == ("-1", "delete"), spec
    assert "retention.ms" not in topic_configs(CHARGES)


def test_specs_do_not_share_a_mutable_config() -> None:
    configs = [spec.config for spec in ALL]
    assert len({id(c) for c in configs}) == len(configs)
