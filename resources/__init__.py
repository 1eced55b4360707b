"""Dagster resources: the device, the object store, the vector store and the settings."""

from trackstar_pipeline.resources.object_store import ObjectStoreResource
from trackstar_pipeline.resources.pipeline_config import PipelineConfig
from trackstar_pipeline.resources.torch_device import TorchDevice, resolve_device
from trackstar_pipeline.resources.vector_store import GRADIENT_TABLE, VectorStore

__all__ = ["GRADIENT_TABLE", "ObjectStoreResource", "PipelineConfig", "TorchDevice", "VectorStore", "resolve_device"]
