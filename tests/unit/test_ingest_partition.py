"""The fast murmur2 behind `partition_for` equals aiokafka's (and so the Java client's)."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner, murmur2
from hypothesis import given
from hypothesis import strategies as st

from services.common.kafka import murmur2_words, partition_for


@given(st.binary(max_size=200))
def test_murmur2_words_equals_aiokafka(data):
    assert murmur2_words(data) == murmur2(data)


@given(st.text(min_size=1, max_size=80), st.integers(1, 64))
def test_partition_for_matches_the_default_partitioner(key, partitions):
    expected = DefaultPartitioner()(key.encode(), list(range(partitions)), list(range(partitions)))
    assert partition_for(key, partitions) == expected
