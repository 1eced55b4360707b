"""The typed PipelineSettings, carried into every run as one resource."""

from __future__ import annotations

import json

from dagster import ConfigurableResource

from trackstar_pipeline.settings import PipelineSettings, build_dataclass, settings_to_dict


class PipelineConfig(ConfigurableResource):
    """PipelineSettings as JSON (Dagster config is plain data); `settings` gives the typed form back."""

    settings_json: str = "{}"

    @classmethod
    def from_settings(cls, settings: PipelineSettings) -> "PipelineConfig":
        return cls(settings_json=json.dumps(settings_to_dict(settings), sort_keys=True))

    @property
    def settings(self) -> PipelineSettings:
        return build_dataclass(PipelineSettings, json.loads(self.settings_json), where="PipelineConfig.settings_json")
