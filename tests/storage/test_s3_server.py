"""The SeaweedFS fixture and the ObjectStore/LanceDB stack against it (a real S3 server)."""

import numpy as np
import pyarrow as pa
import pytest

from trackstar_pipeline.resources import VectorStore
from trackstar_pipeline.storage import ObjectStore

pytestmark = pytest.mark.s3


def test_object_store_round_trip_lands_in_bucket(s3_server):
    store = ObjectStore(s3_server.storage("roundtrip"))
    store.check_reachable()
    uri = store.put_bytes("a/b.bin", b"\x00payload")
    assert uri == f"s3://{s3_server.bucket}/roundtrip/a/b.bin"
    listed = s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix="roundtrip/")
    assert [item["Key"] for item in listed["Contents"]] == ["roundtrip/a/b.bin"]
    assert store.get_bytes("a/b.bin") == b"\x00payload"


def test_lancedb_table_on_s3_answers_a_dot_query(s3_server):
    store = ObjectStore(s3_server.storage("lance"))
    vectors = VectorStore.for_store(store)
    schema = pa.schema([("example_id", pa.string()), ("vector", pa.list_(pa.float16(), 4))])
    table, recreated = vectors.open_or_create_table(schema)
    assert not recreated
    data = np.eye(4, dtype=np.float16)
    table.add(pa.table({"example_id": ["e0", "e1", "e2", "e3"],
                        "vector": pa.FixedSizeListArray.from_arrays(pa.array(data.ravel(), pa.float16()), 4)}, schema=schema))
    reopened = VectorStore.for_store(store).open_table()
    hit = reopened.search(np.array([0, 0, 1, 0], dtype=np.float32)).metric("dot").limit(1).bypass_vector_index().to_arrow()
    assert hit["example_id"].to_pylist() == ["e2"]
    assert 1.0 - hit["_distance"][0].as_py() == pytest.approx(1.0)
    keys = s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix="lance/lancedb/")
    assert keys.get("KeyCount", 0) > 0
