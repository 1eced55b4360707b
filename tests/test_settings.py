"""The one typed configuration: defaults, file loading, overrides and the errors for typos."""

import json

import pytest

from trackstar_pipeline.settings import PipelineSettings, SettingsError, load_settings, settings_to_dict


def test_defaults_run_without_a_file() -> None:
    settings = load_settings()
    assert settings == PipelineSettings()
    assert settings.attribution.lambda_mix == "auto"
    assert settings.storage.uri == "file://./.trackstar"


def test_yaml_file_and_dotted_overrides(tmp_path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("attribution:\n  projection_dim: 512\n  lambda_mix: auto\nevaluation:\n  tailpatch_k: [1, 5]\n")
    settings = load_settings(path, {"attribution.damping": 1})
    assert settings.attribution.projection_dim == 512
    assert settings.attribution.lambda_mix == "auto"
    assert settings.attribution.damping == 1.0 and isinstance(settings.attribution.damping, float)
    assert settings.evaluation.tailpatch_k == (1, 5)


def test_json_round_trip(tmp_path) -> None:
    settings = load_settings(overrides={"data.n_corpus": 50, "storage.uri": "s3://bucket/x"})
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings_to_dict(settings)))
    assert load_settings(path) == settings


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"attribution.projdim": 4}, "unknown key(s) ['projdim']"),
        ({"nosuchsection.x": 1}, "unknown key(s) ['nosuchsection']"),
        ({"attribution.lambda_mix": "often"}, "'often' is not one of ['auto']"),
        ({"attribution.projection_dim": "big"}, "expected int, got 'big'"),
        ({"attribution.curvature": 1}, "expected bool, got 1"),
        ({"attribution.overlength": "drop"}, "'drop' is not one of ['truncate', 'reject']"),
    ],
)
def test_bad_settings_name_the_key(overrides, message) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(overrides=overrides)
    assert message in str(error.value)


def test_top_level_must_be_a_mapping(tmp_path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(SettingsError, match="top level must be a mapping"):
        load_settings(path)


def test_scientific_notation_without_a_dot_is_a_float(tmp_path) -> None:
    """PyYAML reads `5e-3` as a string (YAML 1.1 wants `5.0e-3`); a float setting takes it as the number."""
    path = tmp_path / "settings.yaml"
    path.write_text("training:\n  learning_rate: 5e-3\nattribution:\n  lambda_mix: 1E-2\n")
    settings = load_settings(path, {"attribution.damping": "2e0"})
    assert settings.training.learning_rate == 5e-3 and settings.attribution.lambda_mix == 1e-2
    assert settings.attribution.damping == 2.0
    with pytest.raises(SettingsError, match="learning_rate"):
        load_settings(overrides={"training.learning_rate": "fast"})
    with pytest.raises(SettingsError, match="n_corpus"):
        load_settings(overrides={"data.n_corpus": "5e3"})  # an int setting stays strict
    with pytest.raises(SettingsError, match="learning_rate"):
        load_settings(overrides={"training.learning_rate": "1e400"})  # not a finite number
