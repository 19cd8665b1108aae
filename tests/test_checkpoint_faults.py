"""Faults around checkpoint files: killed and concurrent saves, files changed while loading,
save errors, streaming one tensor at a time, deterministic bytes, standard safetensors."""

import errno
import json
import os
import signal
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest

import unifparam as up
from unifparam import _ckptfile, errors, init, nn

torch = pytest.importorskip("torch")
safetensors = pytest.importorskip("safetensors")

ROOT = Path(__file__).resolve().parent.parent
META = {"format": _ckptfile.FORMAT, "format_version": _ckptfile.FORMAT_VERSION}


def arrays(seed: int, n: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"{i}.weight": rng.random((64, 32 + i)).astype(np.float32) for i in range(n)}


def same(got: dict, want: dict) -> bool:
    return set(got) == set(want) and all(np.array_equal(got[k], want[k]) for k in want)


# ---- a save killed mid-write ------------------------------------------------------------
SAVER = """
import sys, time
import numpy as np
from unifparam import _ckptfile
path, seed, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
_ckptfile.UNNAMED_TEMP = sys.argv[4] == "1"
rng = np.random.default_rng(seed)
values = {f"{i}.weight": rng.random((64, 32 + i)).astype(np.float32) for i in range(6)}
calls = []
def fetch(name):
    def get():
        calls.append(name)
        if len(calls) == stop:  # some tensors are in the temporary file, others are not
            print("ready", flush=True)
            time.sleep(300)
        return values[name]
    return _ckptfile.Pending("float32", values[name].shape, get)
_ckptfile.write(path, {n: fetch(n) for n in values}, {"format": _ckptfile.FORMAT})
print("done", flush=True)
"""


def start_saver(path: Path, seed: int, stop: int, unnamed: bool = False) -> subprocess.Popen:
    """A save stopped after ``stop`` tensors; ``unnamed``: with an O_TMPFILE temporary (Linux),
    else with the named temporary file used elsewhere."""
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path), str(seed), str(stop),
                             str(int(unnamed))],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise AssertionError(proc.communicate()[1])
    return proc


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def temps(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if _ckptfile.is_temp_name(p)]


@pytest.mark.parametrize("stop", [1, 4])
def test_killed_save_leaves_the_old_file_and_a_recognised_temp(tmp_path, stop):
    path = tmp_path / "model.safetensors"
    _ckptfile.write(path, arrays(1), META)
    before = path.read_bytes()
    kill(start_saver(path, 2, stop))
    assert path.read_bytes() == before  # never torn
    assert same(_ckptfile.read(path).arrays(), arrays(1))
    [temp] = temps(tmp_path)
    assert temp.name.startswith(".model.safetensors.unifparam-tmp-")
    with pytest.raises(up.CheckpointFormatError, match="temporary file of a save"):
        _ckptfile.read(temp)


def test_killed_first_save_leaves_no_file(tmp_path):
    path = tmp_path / "new.safetensors"
    kill(start_saver(path, 2, 3))
    assert not path.exists() and len(temps(tmp_path)) == 1


LINUX = pytest.mark.skipif(not _ckptfile.UNNAMED_TEMP, reason="O_TMPFILE is Linux-only")


@LINUX
@pytest.mark.parametrize("stop", [1, 4])
def test_killed_save_on_linux_leaves_nothing_behind(tmp_path, stop):
    path = tmp_path / "model.safetensors"
    _ckptfile.write(path, arrays(1), META)
    before = path.read_bytes()
    kill(start_saver(path, 2, stop, unnamed=True))
    assert os.listdir(tmp_path) == ["model.safetensors"] and path.read_bytes() == before
    kill(start_saver(tmp_path / "new.safetensors", 2, stop, unnamed=True))
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_next_save_removes_stale_temps_of_dead_savers_only(tmp_path):
    path = tmp_path / "model.safetensors"
    kill(start_saver(path, 2, 2))
    [dead] = temps(tmp_path)
    alive = start_saver(path, 3, 2)  # holds the lock on its temporary file
    try:
        [live] = [p for p in temps(tmp_path) if p != dead]
        young = tmp_path / ".model.safetensors.unifparam-tmp-00000000"
        young.write_bytes(b"a save that started a moment ago")
        old = os.stat(dead).st_mtime - 2 * _ckptfile.STALE_SECONDS
        for p in (dead, live):
            os.utime(p, (old, old))
        _ckptfile.write(path, arrays(1), META)
        assert set(temps(tmp_path)) == {live, young}
    finally:
        kill(alive)
    os.utime(live, (old, old))
    _ckptfile.write(path, arrays(1), META)
    assert temps(tmp_path) == [young]
    assert same(_ckptfile.read(path).arrays(), arrays(1))


def test_a_save_through_up_save_killed_mid_write(tmp_path):
    """The real save path: the process dies while tensor bytes are being written."""
    code = f"""
import time, numpy as np, unifparam as up
from unifparam import nn, init, _ckptfile
net = up.build(nn.Sequential(nn.Dense(256, in_features=512), nn.Dense(64)), backend="torch")
up.initialize(net, init.Constant(7.0))
net(np.zeros((1, 512), np.float32))
real = _ckptfile._chunks
def chunks(*args):
    yield from real(*args)
    print("ready", flush=True)
    time.sleep(300)
_ckptfile._chunks = chunks
up.save(net, {str(tmp_path / "m.safetensors")!r})
"""
    code = code.replace("real = ", "_ckptfile.UNNAMED_TEMP = False\nreal = ", 1)
    old = up.build(nn.Sequential(nn.Dense(256, in_features=512), nn.Dense(64, in_features=256)),
                   backend="torch")
    up.initialize(old, init.Constant(1.0))
    up.save(old, tmp_path / "m.safetensors")
    before = (tmp_path / "m.safetensors").read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    kill(proc)
    assert (tmp_path / "m.safetensors").read_bytes() == before
    [temp] = temps(tmp_path)
    with pytest.raises(up.CheckpointFormatError):
        up.load(up.build(nn.Sequential(nn.Dense(256), nn.Dense(64)), backend="torch"), temp)


# ---- concurrent saves -------------------------------------------------------------------
LOOP = """
import sys
import numpy as np
from unifparam import _ckptfile
path, seed = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(seed)
values = {f"{i}.weight": rng.random((64, 32 + i)).astype(np.float32) for i in range(6)}
for _ in range(25):
    _ckptfile.write(path, values, {"format": _ckptfile.FORMAT, "format_version": "1"})
"""


def test_concurrent_saves_leave_one_complete_file(tmp_path):
    path = tmp_path / "m.safetensors"
    refs = {}
    for seed in (1, 2):
        _ckptfile.write(tmp_path / f"ref{seed}.safetensors", arrays(seed), META)
        refs[seed] = (tmp_path / f"ref{seed}.safetensors").read_bytes()
    procs = [subprocess.Popen([sys.executable, "-c", LOOP, str(path), str(seed)], cwd=ROOT,
                              stderr=subprocess.PIPE) for seed in (1, 2)]
    seen = set()
    while any(p.poll() is None for p in procs):  # read while both write
        try:
            ck = _ckptfile.read(path)
        except up.CheckpointNotFoundError:
            continue
        got = ck.arrays()
        seen |= {seed for seed in (1, 2) if same(got, arrays(seed))}
        assert same(got, arrays(1)) or same(got, arrays(2))
    for p in procs:
        assert p.wait() == 0, p.stderr.read()
        p.stderr.close()
    assert path.read_bytes() in (refs[1], refs[2])
    assert temps(tmp_path) == []


# ---- the file changes between read() and arrays() ---------------------------------------
def test_replacing_the_path_after_read_still_gives_the_validated_values(tmp_path):
    path, other = tmp_path / "m.safetensors", tmp_path / "o.safetensors"
    _ckptfile.write(path, arrays(1), META)
    _ckptfile.write(other, arrays(2), META)
    ck = _ckptfile.read(path)
    os.replace(other, path)
    assert same(ck.arrays(), arrays(1))
    path.unlink()  # even gone, the mapping holds the validated file
    assert same(ck.arrays(), arrays(1))


def test_rewriting_the_file_in_place_after_read_is_a_typed_error(tmp_path):
    path = tmp_path / "m.safetensors"
    _ckptfile.write(path, arrays(1), META)
    ck = _ckptfile.read(path)
    with open(path, "r+b") as f:  # same inode, same size, other bytes in the last tensor
        f.seek(-4, os.SEEK_END)
        f.write(b"\x00\x00\xc0\x7f")
    with pytest.raises(up.CheckpointFormatError, match="does not match its recorded"):
        ck.arrays()


@pytest.mark.parametrize("change", ["truncate", "append"])
def test_resizing_the_file_after_read_is_a_typed_error(tmp_path, change):
    path = tmp_path / "m.safetensors"
    _ckptfile.write(path, arrays(1), META)
    ck = _ckptfile.read(path)
    with open(path, "r+b") as f:
        if change == "truncate":
            f.truncate(ck.size // 2)
        else:
            f.seek(0, os.SEEK_END)
            f.write(b"more")
    with pytest.raises(up.CheckpointFormatError, match="changed size"):
        ck.arrays()


def test_load_reads_the_file_it_validated(tmp_path, monkeypatch):
    def net(value):
        n = up.build(nn.Sequential(nn.Dense(4, in_features=3)), backend="torch")
        up.initialize(n, init.Constant(value))
        return n
    path, other = tmp_path / "m.safetensors", tmp_path / "o.safetensors"
    up.save(net(1.0), path)
    up.save(net(5.0), other)
    real = _ckptfile.read

    def read_then_replace(p, **kw):
        ck = real(p, **kw)
        os.replace(other, path)  # after validation, before the values are read
        return ck
    monkeypatch.setattr(_ckptfile, "read", read_then_replace)
    target = net(0.0)
    up.load(target, path)
    assert (target[0].weight.numpy() == 1.0).all()


def test_one_descriptor_and_one_mapping(tmp_path):
    path = tmp_path / "m.safetensors"
    _ckptfile.write(path, arrays(1), META)
    fds = set(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    ck = _ckptfile.read(path)
    got = ck.arrays()
    if fds is not None:
        assert len(set(os.listdir("/proc/self/fd")) - fds) <= 1  # the mapping's own
    bases = {id(a._mmap) for a in got.values()}
    assert bases == {id(ck._map)} and all(isinstance(a, np.memmap) for a in got.values())
    del ck, got


# ---- save errors ------------------------------------------------------------------------
def _net():
    n = up.build(nn.Sequential(nn.Dense(4, in_features=3)), backend="torch")
    up.initialize(n, init.Constant(1.0))
    return n


def test_save_into_a_missing_directory_names_it(tmp_path):
    target = tmp_path / "nope" / "m.safetensors"
    with pytest.raises(up.CheckpointNotFoundError, match=r"directory .*nope does not exist.*"
                                                         r"os\.makedirs"):
        up.save(_net(), target)
    assert list(tmp_path.iterdir()) == []


def test_save_to_none_or_a_directory_is_typed(tmp_path):
    with pytest.raises(errors.CheckpointPathError, match="file path") as caught:
        up.save(_net(), None)
    assert isinstance(caught.value, TypeError)
    with pytest.raises(up.CheckpointNotFoundError, match="is a directory"):
        up.save(_net(), tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_save_into_a_read_only_directory_is_a_permission_error(tmp_path):
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(errors.CheckpointPermissionError, match="permission denied"):
            up.save(_net(), tmp_path / "m.safetensors")
        assert list(tmp_path.iterdir()) == []
    finally:
        tmp_path.chmod(0o755)


@pytest.mark.parametrize("code,cls,match", [
    (errno.EACCES, errors.CheckpointPermissionError, "permission denied"),
    (errno.EROFS, errors.CheckpointIOError, "read-only; save somewhere writable")])
def test_os_refusing_the_temporary_file_is_typed(tmp_path, monkeypatch, code, cls, match):
    real = os.open

    def refuse(p, flags, *a, **kw):
        unnamed = getattr(os, "O_TMPFILE", 0)
        if flags & os.O_CREAT or unnamed and flags & unnamed == unnamed:
            raise OSError(code, os.strerror(code), p)
        return real(p, flags, *a, **kw)
    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(cls, match=match) as caught:
        _ckptfile.write(tmp_path / "m.safetensors", arrays(1), META)
    assert isinstance(caught.value, OSError) and caught.value.errno == code
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_a_failure_mid_stream_removes_the_temp_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "m.safetensors"
    _ckptfile.write(path, arrays(1), META)
    before = path.read_bytes()

    def full():
        raise OSError(errno.ENOSPC, "No space left on device")
    values = {**arrays(2), "9.weight": _ckptfile.Pending("float32", (2, 2), full)}
    with pytest.raises(errors.CheckpointIOError, match="disk is full"):
        _ckptfile.write(path, values, META)
    values["9.weight"] = _ckptfile.Pending("float32", (2, 2), lambda: np.zeros((2, 3), "f4"))
    with pytest.raises(up.CheckpointMismatchError, match=r"declared float32 \(2, 2\)"):
        _ckptfile.write(path, values, META)
    assert os.listdir(tmp_path) == ["m.safetensors"] and path.read_bytes() == before


# ---- streaming, determinism, standard safetensors ---------------------------------------
def test_write_fetches_one_tensor_at_a_time(tmp_path):
    alive: list[weakref.ref] = []
    peak = 0

    def fetch(i):
        def get():
            nonlocal peak
            value = np.full((256, 256), i, np.float32)
            alive.append(weakref.ref(value))
            peak = max(peak, sum(r() is not None for r in alive))
            return value
        return get
    values = {f"{i}.weight": _ckptfile.Pending("float32", (256, 256), fetch(i))
              for i in range(8)}
    _ckptfile.write(tmp_path / "m.safetensors", values, META)
    assert len(alive) == 8 and peak == 1  # each fetched once, the previous one already freed
    got = _ckptfile.read(tmp_path / "m.safetensors").arrays()
    assert all((got[f"{i}.weight"] == i).all() for i in range(8))


def test_plain_callables_strided_and_big_endian_values_round_trip(tmp_path):
    base = np.arange(600, dtype=np.float64).reshape(20, 30)
    values = {"a": base.T, "b": base[::3, ::2], "c": base.astype(">f8"),
              "d": lambda: np.arange(5, dtype=np.int16), "e": np.float32(3.5),
              "f": np.zeros((0, 4), np.uint8), "g": np.array([True, False])}
    _ckptfile.write(tmp_path / "m.safetensors", values, META)
    got = _ckptfile.read(tmp_path / "m.safetensors").arrays()
    for name, value in values.items():
        want = np.asarray(value() if callable(value) else value)
        np.testing.assert_array_equal(got[name], want)
        assert got[name].dtype == want.dtype.newbyteorder("=") and got[name].shape == want.shape


def test_chunked_writes_of_a_tensor_larger_than_a_chunk(tmp_path, monkeypatch):
    monkeypatch.setattr(_ckptfile, "CHUNK", 1000)
    value = np.random.default_rng(0).random((300, 7)).T  # strided: copied a block at a time
    _ckptfile.write(tmp_path / "m.safetensors", {"w": value}, META)
    np.testing.assert_array_equal(_ckptfile.read(tmp_path / "m.safetensors").arrays()["w"],
                                  value)


def test_two_saves_of_one_model_are_byte_identical(tmp_path):
    net = up.build(nn.Sequential(nn.Dense(8, in_features=4), nn.BatchNorm(8), nn.Dense(3)),
                   backend="torch")
    up.initialize(net, init.Normal(std=0.5), seed=3)
    net(np.ones((2, 4), np.float32))
    up.save(net, tmp_path / "a.safetensors")
    up.save(net, tmp_path / "b.safetensors")
    a = (tmp_path / "a.safetensors").read_bytes()
    assert a == (tmp_path / "b.safetensors").read_bytes()
    code = ("import sys\nfrom unifparam import _ckptfile\n"
            "ck = _ckptfile.read(sys.argv[1])\n"
            "_ckptfile.write(sys.argv[2], ck.arrays(), ck.metadata)\n")
    meta = _ckptfile.read(tmp_path / "a.safetensors").metadata
    del meta["digests"]
    for seed in ("0", "1", "12345"):  # another process, another hash seed
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = tmp_path / f"c{seed}.safetensors"
        subprocess.run([sys.executable, "-c", code.replace("ck.metadata", repr(meta)),
                        str(tmp_path / "a.safetensors"), str(out)], check=True, env=env,
                       cwd=ROOT)
        assert out.read_bytes() == a


def test_written_file_is_standard_safetensors_with_digests(tmp_path):
    values = {"x.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
              "x.count": np.arange(3, dtype=np.int64), "x.flag": np.array([True])}
    path = tmp_path / "m.safetensors"
    _ckptfile.write(path, values, META)
    with safetensors.safe_open(str(path), framework="numpy") as f:
        assert set(f.keys()) == set(values)
        for name, value in values.items():
            np.testing.assert_array_equal(f.get_tensor(name), value)
        meta = f.metadata()
    digests = json.loads(meta["digests"])
    import hashlib
    # SHA-256 of the dtype and shape, then the bytes: an edited dtype or shape never verifies
    assert digests == {n: "sha256t:" + hashlib.sha256(
        f"{v.dtype.name}{list(v.shape)}".encode() + v.tobytes()).hexdigest()
        for n, v in values.items()}
    assert {k: meta[k] for k in META} == META


def test_unstorable_dtypes_and_metadata_are_refused_before_any_file(tmp_path):
    path = tmp_path / "m.safetensors"
    wide = _ckptfile.Pending("complex128", (2,), lambda: pytest.fail("fetched"))
    with pytest.raises(up.UnsupportedError, match="complex128"):
        _ckptfile.write(path, {"a": wide}, META)
    with pytest.raises(up.UnsupportedError, match="complex64"):
        _ckptfile.write(path, {"a": np.zeros(2, np.complex64)}, META)
    with pytest.raises(up.CheckpointFormatError, match="strings to strings"):
        _ckptfile.write(path, {}, {"epoch": 3})
    with pytest.raises(up.CheckpointFormatError, match="is not|name"):
        _ckptfile.write(path, {"../x": np.zeros(2)}, META)
    assert list(tmp_path.iterdir()) == []


# ---- kill -9 at random points of a save (Linux: nothing left behind) ---------------------
LOOPING_SAVER = """
import sys
import numpy as np
from unifparam import _ckptfile
path = sys.argv[1]
values = [{f"{i}.weight": np.full((256, 256 + i), seed, np.float32) for i in range(8)}
          for seed in (1.0, 2.0)]
print("ready", flush=True)
k = 0
while True:
    _ckptfile.write(path, values[k % 2], {"format": _ckptfile.FORMAT, "format_version": "1"})
    k += 1
"""


@pytest.mark.skipif(not _ckptfile.UNNAMED_TEMP, reason="O_TMPFILE is Linux-only")
def test_kill_at_random_points_of_saves_leaves_only_a_whole_file(tmp_path):
    rng = np.random.default_rng(27)
    path = tmp_path / "m.safetensors"
    for _ in range(12):
        proc = subprocess.Popen([sys.executable, "-c", LOOPING_SAVER, str(path)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        try:
            proc.wait(timeout=float(rng.uniform(0.0, 0.4)))
        except subprocess.TimeoutExpired:
            pass
        kill(proc)
        left = os.listdir(tmp_path)
        assert left in ([], ["m.safetensors"]), left
        if left:
            got = _ckptfile.read(path).arrays()
            assert len({float(v.flat[0]) for v in got.values()}) == 1
            assert all((v == v.flat[0]).all() for v in got.values())
