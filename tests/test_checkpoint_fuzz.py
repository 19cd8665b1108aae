"""A seeded fuzz test of the checkpoint reader: thousands of mutants of a saved file (byte
flips, truncations, edits of the header's JSON, with and without flipped values). Each is
refused with a typed CheckpointError or loads exactly the original values; none loads
different values."""

import json
import struct

import numpy as np
import pytest

import unifparam as up
from unifparam import init, nn

torch = pytest.importorskip("torch")
MUTANTS = 3000


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    net = up.build(nn.Sequential(nn.Dense(6, in_features=4), nn.Dense(3)), backend="torch")
    up.initialize(net, init.Normal(std=1.0), seed=0)
    up.materialize(net, input_shape=(2, 4))
    path = tmp_path_factory.mktemp("fuzz") / "m.safetensors"
    up.save(net, path)
    return path.read_bytes(), {n: p.numpy().copy() for n, p in up.params(net).items()}


def _edit_json(rng, header: dict) -> None:
    """One random edit of the parsed header (its metadata, or one tensor's entry)."""
    meta = header["__metadata__"]
    names = [k for k in header if k != "__metadata__"]
    kind = rng.integers(9)
    if len(names) < 2 and kind in (4, 7):  # a shard of one tensor: nothing to swap with
        kind = 0
    key = list(meta)[rng.integers(len(meta))]
    name = names[rng.integers(len(names))]
    if kind == 0:
        del meta[key]
    elif kind == 1:
        meta[key + "x"] = meta.pop(key)
    elif kind == 2:
        meta[key] = meta[key][::-1]
    elif kind == 3:
        meta["format"] = ["pt", "unifparam.checkpoint2", "np", ""][rng.integers(4)]
    elif kind == 4:
        digests = json.loads(meta["digests"])
        a, b = rng.choice(names, 2, replace=False)
        digests[a], digests[b] = digests[b], digests[a]
        meta["digests"] = json.dumps(digests)
    elif kind == 5:
        header[name]["shape"] = header[name]["shape"][::-1]
    elif kind == 6:
        header[name]["dtype"] = ["F64", "I32", "F16", "U8"][rng.integers(4)]
    elif kind == 7:
        a, b = rng.choice(names, 2, replace=False)
        header[a], header[b] = header[b], header[a]
    else:
        lo, hi = header[name]["data_offsets"]
        header[name]["data_offsets"] = [lo, hi + int(rng.integers(-8, 9))]


def mutate(rng, blob: bytes) -> bytes:
    kind = rng.integers(4)
    n = struct.unpack("<Q", blob[:8])[0]
    if kind == 0:  # byte flips anywhere
        out = bytearray(blob)
        for at in rng.integers(0, len(blob), rng.integers(1, 5)):
            out[at] ^= int(rng.integers(1, 256))
        return bytes(out)
    if kind == 1:  # truncation
        return blob[:int(rng.integers(0, len(blob)))]
    header = json.loads(blob[8:8 + n])
    _edit_json(rng, header)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    data = bytearray(blob[8 + n:])
    if kind == 3:  # and flipped values
        at = int(rng.integers(len(data)))
        data[at] ^= int(rng.integers(1, 256))
    return struct.pack("<Q", len(raw)) + raw + bytes(data)


def _same(net, want: dict) -> bool:
    got = {n: p.numpy() for n, p in up.params(net).items()}
    return set(got) == set(want) and all(
        got[k].dtype == want[k].dtype and np.array_equal(got[k], want[k]) for k in want)


def test_no_mutant_loads_different_values(original, tmp_path):
    blob, want = original
    rng = np.random.default_rng(20261205)
    path = tmp_path / "mutant.safetensors"
    outcomes = {"refused": 0, "same": 0}
    for i in range(MUTANTS):
        path.write_bytes(mutate(rng, blob))
        # shapes unknown (taken from the file), or known (the file must match them)
        net = up.build(nn.Sequential(nn.Dense(6), nn.Dense(3)), backend="torch")
        if i % 2:
            up.materialize(net, input_shape=(2, 4))
        try:
            up.load(net, path)
        except up.CheckpointError:
            outcomes["refused"] += 1
            continue
        assert _same(net, want), f"mutant {i} loaded different values"
        outcomes["same"] += 1
    assert outcomes["refused"] > MUTANTS // 2 and outcomes["same"] > 0, outcomes


# ---- the same for a sharded directory: mutants of its index or of one shard --------------
DIR_MUTANTS = 600


def _mutate_index(rng, raw: bytes) -> bytes:
    doc = json.loads(raw)
    kind = rng.integers(6)
    names = sorted(doc["weight_map"])
    shards = sorted(set(doc["weight_map"].values()))
    name = names[rng.integers(len(names))]
    if kind == 0:
        out = bytearray(raw)
        for at in rng.integers(0, len(raw), rng.integers(1, 4)):
            out[at] ^= int(rng.integers(1, 256))
        return bytes(out)
    if kind == 1:
        return raw[:int(rng.integers(0, len(raw)))]
    if kind == 2:
        doc["weight_map"][name] = shards[rng.integers(len(shards))]
    elif kind == 3:
        doc["weight_map"][name] = ["../" + shards[0], "/etc/passwd", "", "x.safetensors"][
            rng.integers(4)]
    elif kind == 4:
        key = sorted(doc["metadata"])[rng.integers(len(doc["metadata"]))]
        doc["metadata"][key + "x"] = doc["metadata"].pop(key)
    else:
        del doc["weight_map"][name]
    return json.dumps(doc).encode()


def test_no_directory_mutant_loads_different_values(original, tmp_path):
    _, want = original
    net = up.build(nn.Sequential(nn.Dense(6, in_features=4), nn.Dense(3)), backend="torch")
    up.materialize(net, input_shape=(2, 4))
    for name, p in up.params(net).items():
        p[...] = want[name]
    good = tmp_path / "good"
    up.save_sharded(net, good, max_shard_bytes=64)
    files = {p.name: p.read_bytes() for p in good.iterdir()}
    index = "model.safetensors.index.json"
    rng = np.random.default_rng(24)
    work = tmp_path / "mutant"
    outcomes = {"refused": 0, "same": 0}
    for i in range(DIR_MUTANTS):
        work.mkdir()
        for fname, blob in files.items():
            (work / fname).write_bytes(blob)
        if rng.integers(2):
            (work / index).write_bytes(_mutate_index(rng, files[index]))
        else:
            victim = sorted(f for f in files if f != index)[rng.integers(len(files) - 1)]
            (work / victim).write_bytes(mutate(rng, files[victim]))
        other = up.build(nn.Sequential(nn.Dense(6), nn.Dense(3)), backend="torch")
        try:
            up.load(other, work)
        except up.CheckpointError:
            outcomes["refused"] += 1
        else:
            assert _same(other, want), f"directory mutant {i} loaded different values"
            outcomes["same"] += 1
        for p in work.iterdir():
            p.unlink()
        work.rmdir()
    assert outcomes["refused"] > DIR_MUTANTS // 2 and outcomes["same"] > 0, outcomes


def _as_older_file(blob: bytes) -> bytes:
    """The same file with the digests files before typed digests carry: SHA-256 of the bytes."""
    import hashlib
    n = struct.unpack("<Q", blob[:8])[0]
    header, data = json.loads(blob[8:8 + n]), blob[8 + n:]
    header["__metadata__"]["digests"] = json.dumps({
        name: "sha256:" + hashlib.sha256(data[slice(*entry["data_offsets"])]).hexdigest()
        for name, entry in header.items() if name != "__metadata__"})
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def test_an_older_file_loads_as_it_is_but_is_never_cast(original, tmp_path):
    """Its digests do not cover the header's dtypes, so a cast could hide an edited dtype
    (an F32 entry relabelled I32 keeps its bytes and digest): only exact dtypes load."""
    blob, want = original
    path = tmp_path / "older.safetensors"
    path.write_bytes(_as_older_file(blob))
    net = up.build(nn.Sequential(nn.Dense(6), nn.Dense(3)), backend="torch")
    up.load(net, path)
    assert _same(net, want)
    edited = _as_older_file(blob).replace(b'"dtype": "F32"', b'"dtype": "I32"', 1)
    assert edited != _as_older_file(blob)
    path.write_bytes(edited)
    net = up.build(nn.Sequential(nn.Dense(6), nn.Dense(3)), backend="torch")
    with pytest.raises(up.CheckpointMismatchError, match="does not cover dtypes"):
        up.load(net, path)
