"""The `trackstar` command maps its flags onto the typed settings and reports bad input cleanly."""

import pytest

from trackstar_pipeline import cli
from trackstar_pipeline.settings import AttributionSettings


def test_score_flags_become_attribution_settings() -> None:
    args = cli.build_parser().parse_args(
        ["score", "--model", "m", "--corpus", "c", "--queries", "q", "--top-k", "5", "--output", "o",
         "--projection-dim", "0", "--no-curvature", "--lambda", "auto"]
    )
    settings = cli._settings(args)
    assert settings.attribution.projection_dim == 0
    assert settings.attribution.curvature is False
    assert settings.attribution.lambda_mix == "auto"
    assert args.top_k == 5


def test_flags_not_given_keep_defaults() -> None:
    args = cli.build_parser().parse_args(["query", "--prompt", "p", "--completion", " c"])
    settings = cli._settings(args)
    assert settings.attribution.curvature is True
    assert settings.attribution.projection_dim == AttributionSettings().projection_dim


@pytest.mark.parametrize("value", ["1.5", "-0.1", "sometimes"])
def test_lambda_outside_range_is_rejected(value, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(
            ["score", "--model", "m", "--corpus", "c", "--queries", "q", "--top-k", "1", "--output", "o",
             "--lambda", value]
        )
    assert exit_info.value.code == 2
    assert "--lambda" in capsys.readouterr().err


def test_missing_model_dir_is_one_readable_line(tmp_path, capsys) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"id": "a", "text": "hello"}\n')
    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"id": "q", "prompt": "say", "completion": " hello"}\n')
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["score", "--model", str(tmp_path / "no-model"), "--corpus", str(corpus),
                  "--queries", str(queries), "--top-k", "1", "--output", str(tmp_path / "out.jsonl")])
    assert exit_info.value.code == 1
    error = capsys.readouterr().err
    assert error.startswith("trackstar: error:") and "no-model" in error
    assert "Traceback" not in error


def test_run_materializes_the_graph_and_prints_the_headline(tmp_path, tiny, monkeypatch, capsys) -> None:
    """`trackstar run` on a tiny config: the report exists and its metrics table is printed."""
    import json

    import yaml

    from trackstar_pipeline.settings import StorageSettings, settings_to_dict

    settings = tiny(StorageSettings(uri=(tmp_path / "store").as_uri()))
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump(settings_to_dict(settings)))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "--config", str(config), "--dagster-home", str(tmp_path / "home")]) == 0
    printed = capsys.readouterr().out
    report = tmp_path / "store" / "reports" / "report.md"
    assert f"evaluation report: {report}" in printed
    summary = json.loads((tmp_path / "store" / "reports" / "evaluation.json").read_text())
    for method in ("trackstar", "bm25", "random"):
        mrr = summary["open_set"][method]["mrr"]
        assert f"| {method} | {mrr:.3f} |" in printed
    assert (tmp_path / "home" / "trackstar_settings.json").is_file()


@pytest.mark.parametrize("environment, flag, expected", [
    ("user_home", None, "user_home"),        # $DAGSTER_HOME set: the runs land there
    (None, None, ".dagster_home"),           # neither: ./.dagster_home
    ("user_home", "flag_home", "flag_home"),  # --dagster-home given: it wins
])
def test_run_uses_dagster_home_and_prints_it(environment, flag, expected, tmp_path, monkeypatch, capsys) -> None:
    from trackstar_pipeline import pipeline_run

    monkeypatch.chdir(tmp_path)
    if environment:
        monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / environment))
    else:
        monkeypatch.delenv("DAGSTER_HOME", raising=False)
    used = []
    monkeypatch.setattr(pipeline_run, "run_pipeline", lambda settings, dagster_home, **_: used.append(dagster_home) or "r.md")
    monkeypatch.setattr(cli, "_headline", lambda settings: "")
    assert cli.main(["run", *(["--dagster-home", str(tmp_path / flag)] if flag else [])]) == 0
    assert used == [tmp_path / expected]
    assert f"DAGSTER_HOME={tmp_path / expected} dagster dev" in capsys.readouterr().out
