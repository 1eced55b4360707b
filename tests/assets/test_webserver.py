"""`dagster-webserver` over the DAGSTER_HOME of a tiny `trackstar run`: the run and the report's lineage show in the UI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Iterator

import pytest

pytestmark = pytest.mark.slow

RUNS = "{ runsOrError { ... on Runs { results { runId status } } } }"
REPORT = """{ assetOrError(assetKey: {path: ["evaluation_report"]}) {
  ... on Asset { assetMaterializations(limit: 1) { runId } } } }"""
GRAPH = "{ assetNodes { assetKey { path } dependencyKeys { path } } }"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _graphql(url: str, query: str) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = json.loads(response.read())
    assert "errors" not in payload, payload["errors"]
    return payload["data"]


@pytest.fixture
def webserver(tiny_run, tmp_path) -> Iterator[str]:
    """The GraphQL URL of a dagster-webserver over the tiny run's DAGSTER_HOME, stopped afterwards."""
    port = _free_port()
    log = tmp_path / "webserver.log"
    environment = {**os.environ, "DAGSTER_HOME": str(tiny_run.dagster_home)}
    environment.pop("TRACKSTAR_CONFIG", None)
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", str(port),
             "-m", "trackstar_pipeline.definitions"],
            stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=environment)
    url = f"http://127.0.0.1:{port}/graphql"
    try:
        deadline = time.monotonic() + 240
        while True:  # the code location loads in a subprocess (torch imports): wait for its asset nodes
            if process.poll() is not None:
                pytest.fail(f"dagster-webserver exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if _graphql(url, GRAPH)["assetNodes"]:
                    break
            except (urllib.error.URLError, ConnectionError, AssertionError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"dagster-webserver not ready after 240 s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_webserver_shows_the_runs_and_the_reports_lineage_to_the_checkpoint(webserver):
    runs = _graphql(webserver, RUNS)["runsOrError"]["results"]
    assert runs and {run["status"] for run in runs} == {"SUCCESS"}

    materializations = _graphql(webserver, REPORT)["assetOrError"]["assetMaterializations"]
    assert len(materializations) == 1 and materializations[0]["runId"] in {run["runId"] for run in runs}

    parents = {"/".join(node["assetKey"]["path"]): {"/".join(dep["path"]) for dep in node["dependencyKeys"]}
               for node in _graphql(webserver, GRAPH)["assetNodes"]}
    upstream, frontier = set(), ["evaluation_report"]
    while frontier:
        for parent in parents[frontier.pop()] - upstream:
            upstream.add(parent)
            frontier.append(parent)
    assert {"model_checkpoint", "optimizer_state", "query_gradients", "curvature_inverse_sqrt", "gradient_table",
            "proponents", "corpus_shards"} <= upstream
    assert "evaluation_report" not in upstream
