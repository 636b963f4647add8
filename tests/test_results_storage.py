"""Result files store their larger arrays gzip-compressed: the values, and so the content hash, are what the run
measured; only the bytes on disk shrink (the submitted files travel with the repository's working tree)."""

import h5py
import numpy as np

from ssl_bench import results


def test_large_arrays_are_compressed_and_read_back_unchanged(tmp_path):
    big = np.arange(20_000, dtype=np.int64)  # a stream's train_idx: sorted indices, very compressible
    small = np.arange(10, dtype=np.int64)
    attrs = {"protocol": "p", "method": "m", "stream": "s", "strategy": "t", "seed": 0}
    path = results.write(tmp_path / "r.h5", attrs, {"stream/train_idx": big, "stream/few": small})
    with h5py.File(path) as f:
        assert f["stream/train_idx"].compression == "gzip" and f["stream/few"].compression is None
    assert path.stat().st_size < big.nbytes / 4
    r = results.Result(path)
    assert np.array_equal(r["stream/train_idx"], big) and np.array_equal(r["stream/few"], small)
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:  # the same values stored uncompressed hash the same
        f.create_dataset("stream/train_idx", data=big)
        f.create_dataset("stream/few", data=small)
        for k, v in attrs.items():
            f.attrs[k] = v
        f.attrs["schema_version"] = results.SCHEMA_VERSION
        assert results.content_hash(f) == r.attrs[results.HASH_ATTR]
