"""Foreign files, the digest rule, and checkpoint directories (Hugging Face's layout):
opened by the one reader, written by the one writer, the index treated as hostile input."""

import json
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import unifparam as up
from unifparam import _ckptdir, _ckptfile, init, nn
from unifparam.checkpoint import inspect_file

torch = pytest.importorskip("torch")
safetensors_numpy = pytest.importorskip("safetensors.numpy")
ROOT = Path(__file__).resolve().parent.parent
ARRAYS = {"0.weight": np.arange(32, dtype=np.float32).reshape(8, 4),
          "0.bias": np.arange(8, dtype=np.float32),
          "1.weight": np.arange(24, dtype=np.float32).reshape(3, 8),
          "1.bias": np.arange(3, dtype=np.float32)}
META = {"format": _ckptfile.FORMAT, "format_version": _ckptfile.FORMAT_VERSION}


def split(blob: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", blob[:8])[0]
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def join(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def spec() -> nn.Layer:
    return nn.Sequential(nn.Dense(8, in_features=4), nn.Dense(3))


def model(seed: int | None = None):
    net = up.build(spec(), backend="torch")
    if seed is not None:
        up.initialize(net, init.Normal(std=1.0), seed=seed)
        up.materialize(net, input_shape=(2, 4))
    return net


def values(net) -> dict:
    return {n: p.numpy().copy() for n, p in up.params(net).items()}


# ---- foreign files: any safetensors file opens ------------------------------------------
@pytest.mark.parametrize("meta,writer", [
    ({"format": "pt"}, "PyTorch"), ({"format": "mlx"}, "MLX"), (None, "no format recorded"),
    ({"format": "keras", "other": "x"}, "format 'keras'")])
def test_foreign_files_open_as_plain_tensors(tmp_path, meta, writer):
    path = tmp_path / "f.safetensors"
    safetensors_numpy.save_file(ARRAYS, str(path), metadata=meta)
    text = inspect_file(path)
    assert "Saved by: not unifparam: " in text and writer in text
    assert "Verified: no (no digests recorded" in text
    net = model()
    report = up.load(net, path)
    assert not report.verified and writer in report.writer and "verified=False" in repr(report)
    for name, value in values(net).items():
        np.testing.assert_array_equal(value, ARRAYS[name])


def test_foreign_metadata_is_not_trusted_for_ties_or_spec(tmp_path):
    path = tmp_path / "f.safetensors"
    meta = {"format": "pt", "ties": '[["1.weight", "0.weight", false, true]]', "spec": "{"}
    safetensors_numpy.save_file(ARRAYS, str(path), metadata=meta)
    ck = _ckptfile.read(path)
    assert ck.foreign and ck.ties == [] and ck.spec_json is None and not ck.verified


def test_unifparam_files_say_they_are_verified(tmp_path):
    net = model(1)
    up.save(net, tmp_path / "m.safetensors")
    assert "Verified: yes" in inspect_file(tmp_path / "m.safetensors")
    report = up.load(model(), tmp_path / "m.safetensors")
    assert report.verified and report.writer == "unifparam" and "verified" not in repr(report)


# ---- a file claiming the unifparam format must carry its digests ------------------------
@pytest.mark.parametrize("edit,match", [
    (lambda m: m.pop("digests"), "records no digests"),
    (lambda m: m.__setitem__("digestz", m.pop("digests")), "unknown keys 'digestz'"),
    (lambda m: m.__setitem__("checksums", "{}"), "unknown keys 'checksums'"),
    (lambda m: m.pop("format_version"), "format version ''")])
def test_unifparam_format_without_digests_is_refused(tmp_path, edit, match):
    path = tmp_path / "m.safetensors"
    _ckptfile.write(path, ARRAYS, META)
    header, data = split(path.read_bytes())
    edit(header["__metadata__"])
    data = bytes([data[0] ^ 1]) + data[1:]  # and a flipped value: must never load
    path.write_bytes(join(header, data))
    with pytest.raises(up.CheckpointFormatError, match=match):
        _ckptfile.read(path)
    net = model(2)
    before = values(net)
    with pytest.raises(up.CheckpointFormatError, match=match):
        up.load(net, path)
    assert all(np.array_equal(v, before[k]) for k, v in values(net).items())


# ---- directories --------------------------------------------------------------------------
def test_save_sharded_round_trip_with_spec_and_trainable(tmp_path):
    net = model(3)
    up.save_sharded(net, tmp_path, max_shard_bytes=64)
    names = sorted(os.listdir(tmp_path))
    assert names[-1] == _ckptdir.INDEX and len(names) == 5
    assert all(_ckptdir.SHARD.fullmatch(n) for n in names[:-1])
    ck = _ckptdir.open_checkpoint(tmp_path)
    assert ck.verified and len(ck.parts) == 4 and ck.spec_json is not None
    assert set(ck.trainable) == set(ARRAYS)
    fresh = up.build(nn.Sequential(nn.Dense(8), nn.Dense(3)), backend="torch")
    up.load(fresh, tmp_path)
    assert all(np.array_equal(v, values(net)[k]) for k, v in values(fresh).items())


def test_sharded_saves_are_byte_reproducible_and_replace_stale_shards(tmp_path):
    net = model(4)
    up.save_sharded(net, tmp_path, max_shard_bytes=64)
    first = {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)}
    up.save_sharded(net, tmp_path, max_shard_bytes=64)
    assert {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)} == first
    (tmp_path / "model.safetensors").write_bytes(b"an old single file")
    (tmp_path / "config.json").write_text("{}")
    up.save_sharded(model(5), tmp_path, max_shard_bytes=10**6)
    left = sorted(os.listdir(tmp_path))
    assert len(left) == 3 and left[0] == "config.json" and left[2] == _ckptdir.INDEX


def test_tampered_shard_is_refused_by_digest(tmp_path):
    up.save_sharded(model(6), tmp_path, max_shard_bytes=64)
    shard = sorted(p for p in tmp_path.iterdir() if p.name != _ckptdir.INDEX)[0]
    blob = bytearray(shard.read_bytes())
    blob[-1] ^= 0x40
    shard.write_bytes(bytes(blob))
    net = model(7)
    before = values(net)
    with pytest.raises(up.CheckpointFormatError, match="digest"):
        up.load(net, tmp_path)
    assert all(np.array_equal(v, before[k]) for k, v in values(net).items())


@pytest.fixture
def sharded(tmp_path) -> Path:
    d = tmp_path / "ckpt"
    d.mkdir()
    up.save_sharded(model(8), d, max_shard_bytes=64)
    return d


def edit_index(d: Path, change) -> None:
    doc = json.loads((d / _ckptdir.INDEX).read_text())
    change(doc)
    (d / _ckptdir.INDEX).write_text(json.dumps(doc))


def first_shard(d: Path) -> str:
    return json.loads((d / _ckptdir.INDEX).read_text())["weight_map"]["0.weight"]


HOSTILE = {
    "not json": (lambda d: (d / _ckptdir.INDEX).write_bytes(b"{nope"), "not valid JSON"),
    "not utf-8": (lambda d: (d / _ckptdir.INDEX).write_bytes(b'{"\xff": 1}'), "not valid JSON"),
    "no weight_map": (lambda d: edit_index(d, lambda x: x.pop("weight_map")), "weight_map"),
    "weight_map a list": (lambda d: edit_index(d, lambda x: x.update(weight_map=[])),
                          "weight_map"),
    "duplicate key": (lambda d: (d / _ckptdir.INDEX).write_text(
        '{"weight_map": {}, "weight_map": {}}'), "repeats a key"),
    "None shard": (lambda d: edit_index(d, lambda x: x["weight_map"].update({"0.bias": None})),
                   "not a file name"),
    "absolute path": (lambda d: edit_index(d, lambda x: x["weight_map"].update(
        {"0.weight": str(d / first_shard(d))})), "absolute paths"),
    "dot dot": (lambda d: edit_index(d, lambda x: x["weight_map"].update(
        {"0.weight": "../" + d.name + "/" + first_shard(d)})), "separators or '..'"),
    "passwd": (lambda d: edit_index(d, lambda x: x["weight_map"].update(
        {"0.weight": "../../../../etc/passwd"})), "separators or '..'"),
    "bad name": (lambda d: edit_index(d, lambda x: x["weight_map"].update(
        {"../x": first_shard(d)})), "not a parameter name"),
    "tensor in another shard": (lambda d: edit_index(d, lambda x: x["weight_map"].update(
        {"0.bias": first_shard(d)})), "which the index says it stores"),
    "tensor not indexed": (lambda d: edit_index(d, lambda x: x["weight_map"].pop("1.bias")),
                           "total_size"),
    "total_size wrong": (lambda d: edit_index(d, lambda x: x["metadata"].update(
        total_size=1)), "total_size"),
    "metadata not strings": (lambda d: edit_index(d, lambda x: x["metadata"].update(
        ties=[])), "strings to strings"),
    "shard missing": (lambda d: (d / first_shard(d)).unlink(), "No checkpoint at"),
    "shard truncated": (lambda d: (d / first_shard(d)).write_bytes(
        (d / first_shard(d)).read_bytes()[:-4]), "truncated"),
    "shard foreign": (lambda d: safetensors_numpy.save_file(
        {"0.weight": ARRAYS["0.weight"]}, str(d / first_shard(d))), "does not"),
    "shard a directory": (lambda d: ((d / first_shard(d)).unlink(),
                                     (d / first_shard(d)).mkdir()), "is a directory"),
    "shard a symlink out": (lambda d: ((d.parent / "elsewhere.safetensors").write_bytes(
        (d / first_shard(d)).read_bytes()), (d / first_shard(d)).unlink(),
        (d / first_shard(d)).symlink_to(d.parent / "elsewhere.safetensors")),
        "symbolic link leaving"),
    "index a FIFO": (lambda d: ((d / _ckptdir.INDEX).unlink(), os.mkfifo(d / _ckptdir.INDEX)),
                     "FIFO"),
    "empty dir": (lambda d: [p.unlink() for p in d.iterdir()], "without model.safetensors"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_directories_are_typed_refusals(sharded, case):
    make, match = HOSTILE[case]
    make(sharded)
    net = model(9)
    before = values(net)
    with pytest.raises(up.CheckpointError, match=match):
        up.load(net, sharded)
    with pytest.raises(up.CheckpointError, match=match):
        inspect_file(sharded)
    assert all(np.array_equal(v, before[k]) for k, v in values(net).items())


def test_links_inside_the_directory_and_a_hub_cache_snapshot_are_followed(tmp_path):
    repo = tmp_path / "models--tiny"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    up.save_sharded(model(10), tmp_path / "src", max_shard_bytes=64)
    for p in (tmp_path / "src").iterdir():  # as huggingface_hub lays a download out
        blob = repo / "blobs" / p.name.replace(".", "_")
        blob.write_bytes(p.read_bytes())
        (snap / p.name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    assert same_as(snap, 10)
    inner = tmp_path / "inner"
    up.save_sharded(model(11), inner, max_shard_bytes=64)
    shard = first_shard(inner)
    (inner / shard).rename(inner / "elsewhere-in-dir.bin")
    (inner / shard).symlink_to("elsewhere-in-dir.bin")
    assert same_as(inner, 11)


def test_load_sharded_on_a_hostile_directory_is_typed(sharded):
    HOSTILE["passwd"][0](sharded)
    with pytest.raises(up.CheckpointFormatError):
        up.load_sharded(model(), sharded)
    with pytest.raises(up.CheckpointPathError):
        up.load(model(), None)
    with pytest.raises(up.CheckpointPathError):
        up.load_sharded(model(), None)


def test_bad_save_sharded_targets_are_typed(tmp_path):
    with pytest.raises(up.CheckpointPathError):
        up.save_sharded(model(1), None)
    (tmp_path / "file").write_text("x")
    with pytest.raises(up.CheckpointNotFoundError, match="it is a file"):
        up.save_sharded(model(1), tmp_path / "file")
    with pytest.raises(up.CheckpointNotFoundError, match="does not exist"):
        up.save_sharded(model(1), tmp_path / "file" / "sub")
    assert (tmp_path / "file").read_text() == "x"


def test_an_oversized_index_is_refused_before_parsing(sharded):
    os.truncate(sharded / _ckptdir.INDEX, _ckptdir.MAX_INDEX_BYTES + 1)  # sparse
    with pytest.raises(up.CheckpointFormatError, match="over the limit"):
        up.load(model(), sharded)


def test_a_float64_shard_is_cast_and_reported_or_refused_with_cast_false(tmp_path):
    safetensors_numpy.save_file({k: v.astype(np.float64) for k, v in ARRAYS.items()
                                 if k.startswith("0.")}, str(tmp_path / "a.safetensors"))
    safetensors_numpy.save_file({k: v for k, v in ARRAYS.items() if k.startswith("1.")},
                                str(tmp_path / "b.safetensors"))
    index = {"metadata": {"total_size": 1}, "weight_map": {
        k: ("a" if k.startswith("0.") else "b") + ".safetensors" for k in ARRAYS}}
    (tmp_path / _ckptdir.INDEX).write_text(json.dumps(index))
    net = model(12)
    before = values(net)
    with pytest.raises(up.CheckpointMismatchError, match="float32 in the model but float64"):
        up.load_sharded(net, tmp_path, cast=False)
    assert all(np.array_equal(v, before[k]) for k, v in values(net).items())
    report = up.load(net, tmp_path)  # cast to the model's dtype, as load_state_dict does
    assert {(n, a, b) for n, a, b in report.cast} == {
        ("0.weight", "float64", "float32"), ("0.bias", "float64", "float32")}
    assert all(v.dtype == np.float32 and np.array_equal(v, ARRAYS[k].astype(np.float32))
               for k, v in values(net).items())


# ---- faults: a killed sharded save, concurrent saves and loads --------------------------
SHARDED_SAVER = """
import sys, time, numpy as np, unifparam as up
from unifparam import nn, init, _ckptfile
d, seed, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
net = up.build(nn.Sequential(nn.Dense(8, in_features=4), nn.Dense(3)), backend=sys.argv[4])
up.initialize(net, init.Normal(std=1.0), seed=seed)
up.materialize(net, input_shape=(2, 4))
if n < 0:
    for _ in range(-n):
        up.save_sharded(net, d, max_shard_bytes=64)
    sys.exit(0)
real, calls = _ckptfile._chunks, []
def chunks(*args):
    calls.append(1)
    if len(calls) == n:
        print("ready", flush=True)
        time.sleep(300)
    yield from real(*args)
_ckptfile._chunks = chunks
up.save_sharded(net, d, max_shard_bytes=64)
print("ready", flush=True)
time.sleep(300)
"""


def backend() -> str:
    return "torch"


def same_as(d: Path, seed: int) -> bool:
    return all(np.array_equal(v, values(model(seed))[k]) for k, v in _load(d).items())


def _load(d: Path) -> dict:
    net = model()
    up.load(net, d)
    return values(net)


@pytest.mark.skipif(not _ckptfile.UNNAMED_TEMP, reason="O_TMPFILE is Linux-only")
@pytest.mark.parametrize("stop", [1, 3, 5])
def test_killed_sharded_save_leaves_the_old_checkpoint_and_no_debris(tmp_path, stop):
    up.save_sharded(model(1), tmp_path, max_shard_bytes=64)
    before = sorted(os.listdir(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", SHARDED_SAVER, str(tmp_path), "2",
                             str(stop), backend()], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    after = sorted(os.listdir(tmp_path))
    if stop == 5:  # killed after the save completed: the new checkpoint, nothing else
        assert same_as(tmp_path, 2) and len(after) == len(before)
    else:  # the old index names the old shards; new shards may exist, nothing else does
        assert same_as(tmp_path, 1) and set(before) <= set(after)
        assert all(_ckptdir.SHARD.fullmatch(n) for n in set(after) - set(before))
    assert not any(_ckptfile.is_temp_name(n) for n in after)


def test_loads_while_two_processes_save_see_one_whole_checkpoint(tmp_path):
    up.save_sharded(model(1), tmp_path, max_shard_bytes=64)
    procs = [subprocess.Popen([sys.executable, "-c", SHARDED_SAVER, str(tmp_path), str(seed),
                               "-15", backend()], cwd=ROOT, stderr=subprocess.PIPE)
             for seed in (1, 2)]
    refs = {seed: values(model(seed)) for seed in (1, 2)}
    while any(p.poll() is None for p in procs):
        got = _load(tmp_path)
        assert any(all(np.array_equal(got[k], ref[k]) for k in ref) for ref in refs.values())
    for p in procs:
        assert p.wait() == 0, p.stderr.read()
        p.stderr.close()
    assert same_as(tmp_path, 1) or same_as(tmp_path, 2)
    assert len(os.listdir(tmp_path)) == 5
