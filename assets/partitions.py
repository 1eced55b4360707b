"""The one partitioning of the corpus: a dynamic set of shards, registered by the shard sensor."""

from typing import Any

from dagster import DynamicPartitionsDefinition

corpus_shards_partitions = DynamicPartitionsDefinition(name="corpus_shards")


def registered_shards(instance: Any) -> list[str]:
    """The corpus_shards partition keys an instance knows, sorted (the order whole-corpus assets read shards in)."""
    return sorted(instance.get_dynamic_partitions(corpus_shards_partitions.name))
