"""One tiny `trackstar run` shared by the asset tests, with every store read and write recorded per step.

Tests that change the run (re-materialize, add a shard, record a new checkpoint) work on a copy
(`run_copy`), so no test depends on the order the others ran in.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import dagster as dg
import pytest

from trackstar_pipeline import pipeline_run
from trackstar_pipeline.settings import PipelineSettings, StorageSettings
from trackstar_pipeline.storage import ObjectStore, vector_table


@dataclass
class StoreAccess:
    """Store keys read and written, per step (the asset keys the step materialized)."""

    reads: dict[frozenset[str], set[str]] = field(default_factory=lambda: defaultdict(set))
    writes: dict[frozenset[str], set[str]] = field(default_factory=lambda: defaultdict(set))


@dataclass(frozen=True)
class TinyRun:
    settings: PipelineSettings
    root: Path
    dagster_home: Path
    report: str
    messages: list[str]
    access: StoreAccess

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.dagster_home))


def _current_step() -> frozenset[str] | None:
    """The asset keys of the step running now, or None outside a step."""
    try:
        context = dg.AssetExecutionContext.get()
    except dg.DagsterInvariantViolationError:
        return None
    return frozenset(key.to_user_string() for key in context.selected_asset_keys)


def _recording(monkeypatch: pytest.MonkeyPatch, access: StoreAccess) -> None:
    """Wraps the store's and the vector table's entry points to note every key each step touches."""
    def note(kind: str, key: str) -> None:
        step = _current_step()
        if step is not None and key:
            getattr(access, kind)[step].add(key)

    def wrap(owner, name: str, kind: str, key_of) -> None:
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            note(kind, key_of(*args, **kwargs))
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)

    for name in ("get_bytes", "list_keys", "uri_for", "exists"):
        wrap(ObjectStore, name, "reads", lambda self, key="", *_, **__: key)
    for name in ("put_bytes", "put_file"):
        wrap(ObjectStore, name, "writes", lambda self, key, *_, **__: key)
    wrap(ObjectStore, "upload_dir", "writes", lambda self, directory, prefix, *_, **__: prefix)
    table = f"lancedb/{vector_table.GRADIENT_TABLE}"
    wrap(vector_table, "open_gradient_table", "reads", lambda *_, **__: table)
    wrap(vector_table, "open_or_create_table", "writes", lambda *_, **__: table)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny) -> TinyRun:
    """One full run of the graph on a file:// store, recording what each step read and wrote."""
    root = tmp_path_factory.mktemp("pipeline")
    settings = tiny(StorageSettings(uri=f"file://{root}/store"))
    messages: list[str] = []
    access = StoreAccess()
    with pytest.MonkeyPatch.context() as monkeypatch:
        _recording(monkeypatch, access)
        report = pipeline_run.run_pipeline(settings, dagster_home=root / "dagster_home", progress=messages.append,
                                           in_process=True)
    return TinyRun(settings, root, root / "dagster_home", report, messages, access)


@pytest.fixture
def run_copy(tiny_run: TinyRun, tmp_path: Path) -> TinyRun:
    """A private copy of the tiny run (store and DAGSTER_HOME) that a test may change."""
    root = tmp_path / "copy"
    shutil.copytree(tiny_run.root, root, symlinks=True)
    settings = replace(tiny_run.settings, storage=replace(tiny_run.settings.storage, uri=f"file://{root}/store"))
    return replace(tiny_run, settings=settings, root=root, dagster_home=root / "dagster_home",
                   report=str(root / "store" / "reports" / "report.md"))
