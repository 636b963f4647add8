import h5py
import numpy as np
import pytest

from ssl_bench import results
from ssl_bench.errors import UserError


def write_minimal(path, **attrs):
    return results.write(
        path,
        {"protocol": "p", **attrs},
        {"config": '{"a": 1}', "metrics/acc_matrix": np.eye(2), "train/loss": np.arange(3.0)},
        {"summary": {"final_avg_acc": 0.5}},
    )


def test_round_trip(tmp_path):
    path = write_minimal(tmp_path / "r.h5", method="m", plugins={"x": "1.0"})
    r = results.Result(path)
    assert r.attrs["schema_version"] == results.SCHEMA_VERSION and r.attrs["method"] == "m"
    assert r.config == {"a": 1} and r.stored_summary == {"final_avg_acc": 0.5}
    assert r.summary["final_avg_acc"] == 0.5 and r.summary["avg_acc"] == 0.75  # recomputed from the matrix
    np.testing.assert_array_equal(r.acc_matrix, np.eye(2))
    assert r.attrs["plugins"] == '{"x": "1.0"}'


@pytest.mark.parametrize("version, word", [(results.SCHEMA_VERSION + 1, "newer"), (0, "older")])
def test_schema_version_is_checked(tmp_path, version, word):
    path = write_minimal(tmp_path / "r.h5")
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = version
    with pytest.raises(UserError, match=word):
        results.Result(path)


def test_not_a_result_file(tmp_path):
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(UserError, match="not a readable HDF5"):
        results.Result(tmp_path / "junk.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(UserError, match="no schema_version"):
        results.Result(tmp_path / "other.h5")


def test_failed_write_leaves_nothing_and_keeps_old_file(tmp_path):
    path = write_minimal(tmp_path / "r.h5", method="old")

    class Unstorable:
        pass

    with pytest.raises(TypeError):  # h5py has no type for a Python object
        results.write(path, {"method": "new"}, {"bad": Unstorable()})
    assert results.Result(path).attrs["method"] == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.h5"]


def test_result_names_are_stable_and_safe():
    name = results.result_name("smoke-v1", "my/method", "instance", "replay+mas", 3)
    assert name == "smoke-v1__my_method__instance__replay+mas__s3.h5"
