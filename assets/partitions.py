"""The one partitioning of the corpus: a dynamic set of shards, registered by the shard sensor."""

from dagster import DynamicPartitionsDefinition

corpus_shards_partitions = DynamicPartitionsDefinition(name="corpus_shards")
