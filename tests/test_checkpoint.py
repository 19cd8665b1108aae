"""Checkpoint files: atomic saves, hostile files, no pickle, torch state-dict layout, inspect."""

import hashlib
import io
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import unifparam as up
from unifparam import _ckptfile, checkpoint, init, nn
from unifparam._specio import spec_from_json, spec_to_json

torch = pytest.importorskip("torch")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

ROOT = Path(__file__).resolve().parent.parent


def spec():
    shared = nn.Dense(8, activation="tanh")
    return nn.Sequential(nn.Dense(8, activation="tanh", in_features=4), shared, shared,
                         nn.BatchNorm(8), nn.Dense(3, in_features=8))


def trained(seed=0):
    net = up.build(spec(), backend="torch")
    up.initialize(net, init.Normal(std=0.5), seed=seed)
    net(np.random.default_rng(seed).random((5, 4), dtype=np.float32), training=True)
    return net


def values(net):
    return {n: p.numpy() for n, p in up.params(net).items()}


@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ck") / "good.safetensors"
    up.save(trained(), path)
    return path.read_bytes()


# ---- atomic save ------------------------------------------------------------------------
SAVER = """
import os, sys, time
import numpy as np, safetensors, unifparam as up
from unifparam import nn, init
path, point = sys.argv[1], sys.argv[2]
from unifparam import _ckptfile
_ckptfile.UNNAMED_TEMP = point == "link"  # else the named temporary file used off Linux
net = up.build(nn.Sequential(nn.Dense(256, in_features=512), nn.Dense(64)), backend="torch")
up.initialize(net, init.Constant(7.0))
net(np.zeros((1, 512), np.float32))
if point == "write":  # killed while the temporary file is half written
    from unifparam import _ckptfile
    real = _ckptfile._chunks
    def chunks(*args):
        yield from real(*args)
        print("ready", flush=True)
        time.sleep(120)
    _ckptfile._chunks = chunks
elif point == "link":  # the unnamed temporary file is complete, not linked in yet
    def link(*args, **kwargs):
        print("ready", flush=True)
        time.sleep(120)
    os.link = link
else:  # killed after the temporary file is complete, before the rename
    def replace(src, dst):
        print("ready", flush=True)
        time.sleep(120)
    os.replace = replace
up.save(net, path)
"""


def _kill_mid_save(path: Path, point: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path), point], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("point", ["write", "rename"])
def test_save_killed_midway_leaves_previous_file_intact(tmp_path, point):
    """Off Linux (named temporary file): the old file stays, the leftover is refused."""
    path = tmp_path / "model.safetensors"
    old = up.build(nn.Sequential(nn.Dense(256, in_features=512), nn.Dense(64, in_features=256)),
                   backend="torch")
    up.initialize(old, init.Constant(1.0))
    up.save(old, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    _kill_mid_save(path, point)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != path.name]
    assert len(leftovers) == 1 and leftovers[0].startswith(".model.safetensors.")
    fresh = up.build(nn.Sequential(nn.Dense(256), nn.Dense(64)), backend="torch")
    up.load(fresh, path)
    assert (fresh[0].weight.numpy() == 1.0).all()
    if point == "write":
        with pytest.raises(up.CheckpointFormatError):  # the half-written leftover is rejected
            up.load(fresh, tmp_path / leftovers[0])


def test_save_killed_midway_without_previous_file_leaves_no_file(tmp_path):
    _kill_mid_save(tmp_path / "new.safetensors", "rename")
    assert not (tmp_path / "new.safetensors").exists()


@pytest.mark.skipif(not _ckptfile.UNNAMED_TEMP, reason="O_TMPFILE is Linux-only")
def test_save_killed_before_linking_on_linux_leaves_nothing(tmp_path):
    path = tmp_path / "model.safetensors"
    up.save(trained(0), path)
    before = path.read_bytes()
    _kill_mid_save(path, "link")
    assert os.listdir(tmp_path) == ["model.safetensors"] and path.read_bytes() == before
    _kill_mid_save(tmp_path / "new.safetensors", "link")
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_successful_save_replaces_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "m.safetensors"
    up.save(trained(0), path)
    os.chmod(path, 0o640)
    up.save(trained(1), path)
    assert os.listdir(tmp_path) == ["m.safetensors"]
    assert os.stat(path).st_mode & 0o777 == 0o640  # an overwrite keeps the file's mode
    net = up.build(spec(), backend="torch")
    up.load(net, path)
    for name, value in values(trained(1)).items():
        np.testing.assert_array_equal(values(net)[name], value)


def test_failed_save_leaves_no_temporary_file(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")
    from unifparam import _ckptfile
    monkeypatch.setattr(_ckptfile, "_chunks", broken)
    with pytest.raises(OSError, match="disk full"):
        up.save(trained(), tmp_path / "m.safetensors")
    assert os.listdir(tmp_path) == []


# ---- hostile files ----------------------------------------------------------------------
def _header(blob: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", blob[:8])[0]
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def _with_header(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def _load_fails_cleanly(path: Path) -> None:
    """Loading either works or raises a CheckpointError; a failure changes nothing."""
    net = trained(3)
    before = values(net)
    try:
        up.load(net, path)
    except up.CheckpointError:
        for name, value in values(net).items():
            np.testing.assert_array_equal(value, before[name])
    try:
        up.inspect_file(path)
    except up.CheckpointError:
        pass


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupted_files_raise_only_typed_errors(good_file, tmp_path, data):
    blob = bytearray(good_file)
    how = data.draw(st.sampled_from(["truncate", "flip", "length", "header", "garbage"]))
    if how == "truncate":
        blob = blob[:data.draw(st.integers(0, len(blob) - 1))]
    elif how == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(blob) - 1))
            blob[i] = data.draw(st.integers(0, 255))
    elif how == "length":
        blob[:8] = struct.pack("<Q", data.draw(st.integers(0, 2**64 - 1)))
    elif how == "header":
        header, rest = _header(bytes(blob))
        json_values = st.recursive(
            st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(),
            lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(), kids,
                                                                       max_size=4),
            max_leaves=12)
        key = data.draw(st.sampled_from(sorted(header)))
        if key == "__metadata__":
            field = data.draw(st.sampled_from(sorted(header[key])))
            header[key][field] = data.draw(st.text() | json_values.map(json.dumps))
        else:
            header[key] = data.draw(json_values)
        blob = bytearray(_with_header(header, rest))
    else:
        blob = bytearray(data.draw(st.binary(max_size=300)))
    path = tmp_path / "bad.safetensors"
    path.write_bytes(bytes(blob))
    _load_fails_cleanly(path)


def test_oversized_and_truncated_headers_are_rejected(tmp_path, good_file):
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", 2**40) + good_file[8:])
    with pytest.raises(up.CheckpointFormatError, match="over the limit"):
        up.inspect_file(path)
    path.write_bytes(struct.pack("<Q", len(good_file)) + good_file[8:])
    with pytest.raises(up.CheckpointFormatError, match="truncated"):
        up.inspect_file(path)
    path.write_bytes(good_file[:-4])
    with pytest.raises(up.CheckpointFormatError, match="truncated"):
        up.load(trained(), path)
    path.write_bytes(b"\x01\x00")
    with pytest.raises(up.CheckpointFormatError, match="fewer than"):
        up.load(trained(), path)


def test_header_limit_is_enforced_before_reading(tmp_path, good_file, monkeypatch):
    monkeypatch.setattr(_ckptfile, "MAX_HEADER_BYTES", 64)
    path = tmp_path / "x.safetensors"
    path.write_bytes(good_file)
    with pytest.raises(up.CheckpointFormatError, match="over the limit of 64"):
        up.inspect_file(path)


@pytest.mark.parametrize("name", ["../etc/passwd", "a..b", ".a", "a.", "a b", "x/y", "é",
                                  "w" * 600])
def test_bad_names_are_rejected(tmp_path, name):
    path = tmp_path / "x.safetensors"
    safetensors_numpy.save_file({name: np.zeros(2, np.float32)}, str(path))
    with pytest.raises(up.CheckpointFormatError, match="is not a parameter name"):
        up.load(trained(), path, strict=False)


def test_unsupported_dtype_and_bad_ties_are_rejected(tmp_path, good_file):
    header, rest = _header(good_file)
    path = tmp_path / "x.safetensors"
    bad = json.loads(json.dumps(header))
    bad["0.bias"]["dtype"] = "C64"  # complex: no parameter dtype (BF16 and F8 are read)
    path.write_bytes(_with_header(bad, rest))
    with pytest.raises(up.CheckpointFormatError, match="C64"):
        up.load(trained(), path)
    bad = json.loads(json.dumps(header))
    bad["__metadata__"]["ties"] = json.dumps([["2.weight", "nope", False, False]])
    path.write_bytes(_with_header(bad, rest))
    with pytest.raises(up.CheckpointFormatError, match="tie"):
        up.load(trained(), path)


def test_missing_file_is_a_typed_error(tmp_path):
    with pytest.raises(up.CheckpointNotFoundError, match="No checkpoint"):
        up.load(trained(), tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError):
        up.inspect_file(tmp_path / "nope.safetensors")


# ---- no pickle --------------------------------------------------------------------------
class _Boom:
    def __reduce__(self):
        return (os.system, ("touch boom-was-executed",))


def test_pickle_files_are_rejected_without_running_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"0.weight": _Boom()}))
    with pytest.raises(up.CheckpointFormatError):
        up.load(trained(), path)
    with pytest.raises(up.CheckpointFormatError):
        up.inspect_file(path)
    assert not (tmp_path / "boom-was-executed").exists()


def test_checkpoint_code_has_no_pickle_path():
    for module in ("checkpoint.py", "_ckptfile.py", "_ckptinspect.py", "_specio.py"):
        source = (ROOT / "unifparam" / module).read_text()
        for banned in ("pickle", "np.load(", "torch.load", "eval(", "exec("):
            assert banned not in source, f"{module} uses {banned}"


# ---- layout, memory mapping, progress, inspect ------------------------------------------
def test_file_is_plain_safetensors_in_torch_state_dict_layout(tmp_path):
    net = trained()
    path = tmp_path / "m.safetensors"
    up.save(net, path)
    tensors = safetensors_numpy.load_file(str(path))
    state = {k: v.numpy() for k, v in net.native.state_dict().items()}
    assert set(tensors) == set(state) - {"2.weight", "2.bias", "3.num_batches_tracked"}
    for name, value in tensors.items():
        np.testing.assert_array_equal(value, state[name], err_msg=name)
    module = up.build(spec(), backend="torch").native  # a plain torch module loads it too
    result = module.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()},
                                    strict=False)
    assert set(result.missing_keys) == {"2.weight", "2.bias"}  # layer 1 used again: same tensor
    np.testing.assert_array_equal(module[2].weight.detach().numpy(), tensors["1.weight"])


def test_loading_memory_maps_the_file(tmp_path):
    path = tmp_path / "m.safetensors"
    up.save(trained(), path)
    arrays = _ckptfile.read(path).arrays()
    assert all(isinstance(a, np.memmap) for a in arrays.values())


def test_progress_bar_only_for_large_files_on_a_terminal(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    up.save(trained(), path)

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for threshold, tty, shown in ((0, True, True), (0, False, False), (10**12, True, False)):
        out = Terminal() if tty else io.StringIO()
        monkeypatch.setattr(sys, "stdout", out)
        monkeypatch.setattr(checkpoint, "PROGRESS_THRESHOLD", threshold)
        up.load(up.build(spec(), backend="torch"), path)
        assert ("loading" in out.getvalue()) is shown


def _autoencoder():
    net = up.build(nn.Sequential(nn.Dense(3, activation="tanh"), nn.Dense(6)), backend="torch")
    up.tie(net, "0.weight", "1.weight", transpose=True)
    net(np.ones((1, 6), np.float32))
    return net


def test_inspect_file_prints_the_saved_models_summary(tmp_path):
    for net in (trained(), _autoencoder()):
        path = tmp_path / "m.safetensors"
        up.save(net, path)
        text = up.inspect_file(path)
        assert str(up.summary(net)) in text
    assert f"{os.path.getsize(path):,} bytes" in text and "unifparam 0.1.0" in text


def test_inspect_file_of_a_plain_safetensors_file_lists_tensors(tmp_path):
    path = tmp_path / "plain.safetensors"
    safetensors_numpy.save_file({"enc.weight": np.zeros((3, 2), np.float32),
                                 "enc.bias": np.zeros(3, np.float16)}, str(path))
    text = up.inspect_file(path)
    assert "plain safetensors" in text
    assert "enc.weight   (3, 2)   float32" in text and "enc.bias     (3,)     float16" in text


def test_spec_json_round_trip_keeps_sharing_and_rejects_junk():
    s = spec()
    back = spec_from_json(spec_to_json(s))
    assert repr(back) == repr(s) and back[1] is back[2]
    for junk in ("[]", '{"format": "unifparam.spec/1", "root": {"kind": "Lambda"}}',
                 '{"format": "unifparam.spec/1", "root": {"ref": 3}}', "{" * 5000):
        with pytest.raises(up.SpecError):
            spec_from_json(junk)


def test_adopted_native_models_save_and_load_by_canonical_names(tmp_path):
    source = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    path = tmp_path / "native.safetensors"
    up.save(up.build(source), path)
    assert "0.weight   (8, 4)   float32" in up.inspect_file(path)  # no spec: a tensor table
    target = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    up.load(up.build(target), path)
    assert torch.equal(source[2].weight, target[2].weight)
    lazy = up.build(torch.nn.Sequential(torch.nn.LazyLinear(8), torch.nn.ReLU(),
                                        torch.nn.LazyLinear(2)))
    up.load(lazy, path)  # native lazy layers sized by the file, as load_state_dict does
    assert {p.state for p in up.params(lazy).values()} == {"materialized"}
    np.testing.assert_array_equal(lazy[0].weight.numpy(), source[0].weight.detach().numpy())
    lazy = up.build(torch.nn.Sequential(torch.nn.LazyLinear(8), torch.nn.ReLU(),
                                        torch.nn.LazyLinear(2)))
    up.materialize(lazy, input_shape=(1, 4), abstract=True)
    up.load(lazy, path)
    np.testing.assert_array_equal(lazy[0].weight.numpy(), source[0].weight.detach().numpy())
    wrong = up.build(torch.nn.Sequential(torch.nn.LazyLinear(9)))  # the file's is 8 rows
    with pytest.raises(up.CheckpointMismatchError, match="0.weight"):
        up.load(wrong, path, strict=False)
    assert up.params(wrong)["0.weight"].state == "deferred"
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(lazy.to_numpy(lazy(x)), source(torch.from_numpy(x)).detach())
