"""A hostile-file corpus, generated here: every file is refused with a typed error, at once.

Each case is read with ``_ckptfile.read`` (then ``arrays()``, which verifies digests) and
with ``inspect_file``; nothing may raise anything but a CheckpointError, block, or crash.
"""

import errno
import json
import os
import stat
import struct
from pathlib import Path

import numpy as np
import pytest

import unifparam as up
from unifparam import _ckptfile, checkpoint, errors
from unifparam._ckptinspect import MAX_TABLE_ROWS

safetensors_numpy = pytest.importorskip("safetensors.numpy")

ARRAYS = {"0.weight": np.arange(32, dtype=np.float32).reshape(8, 4),
          "0.bias": np.arange(8, dtype=np.float32),
          "1.weight": np.arange(24, dtype=np.float32).reshape(3, 8),
          "1.bias": np.arange(3, dtype=np.float32)}
SPEC = json.dumps({"format": "unifparam.spec/1", "root": {"kind": "Sequential", "layers": [
    {"kind": "Dense", "args": {"units": 8, "activation": None, "use_bias": True,
                               "in_features": 4}},
    {"kind": "Dense", "args": {"units": 3, "activation": None, "use_bias": True,
                               "in_features": 8}}]}})
META = {"format": _ckptfile.FORMAT, "format_version": _ckptfile.FORMAT_VERSION,
        "unifparam_version": "0.1.0", "backend": "torch", "ties": "[]",
        "trainable": json.dumps({n: True for n in ARRAYS}), "spec": SPEC}


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("good") / "good.safetensors"
    _ckptfile.write(path, ARRAYS, META)
    return path.read_bytes()


def split(blob: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", blob[:8])[0]
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def join(header: dict | bytes, data: bytes) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def refused(path, error=up.CheckpointFormatError, match=None) -> None:
    """read+arrays and inspect_file both raise ``error`` (a typed checkpoint error)."""
    with pytest.raises(error, match=match) as caught:
        _ckptfile.read(path).arrays()
    assert isinstance(caught.value, up.CheckpointError)
    with pytest.raises(error, match=match):
        checkpoint.inspect_file(path)


def test_the_good_file_reads(good, tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(good)
    arrays = _ckptfile.read(path).arrays()
    for name, value in ARRAYS.items():
        np.testing.assert_array_equal(arrays[name], value)
        assert arrays[name].dtype == value.dtype


# ---- truncated, bad offsets, overlaps, header lengths ------------------------------------
def test_every_truncation_is_refused(good, tmp_path):
    path = tmp_path / "t.safetensors"
    for cut in range(len(good)):
        path.write_bytes(good[:cut])
        with pytest.raises(up.CheckpointFormatError):
            _ckptfile.read(path).arrays()


@pytest.mark.parametrize("offsets", [[0, 2**60], [8, 4], [-4, 0], [0.0, 32.0], [0], "0-32",
                                     [0, 32, 64], [2**53, 2**53 + 32], [True, 33]])
def test_bad_offsets_are_refused(good, tmp_path, offsets):
    header, data = split(good)
    header["0.bias"]["data_offsets"] = offsets
    path = tmp_path / "o.safetensors"
    path.write_bytes(join(header, data))
    refused(path)


def test_overlapping_and_gapped_ranges_are_refused(good, tmp_path):
    header, data = split(good)
    a, b = header["0.weight"]["data_offsets"], header["0.bias"]["data_offsets"]
    overlap = json.loads(json.dumps(header))
    overlap["0.bias"]["data_offsets"] = [a[0], a[0] + b[1] - b[0]]  # inside 0.weight
    path = tmp_path / "x.safetensors"
    path.write_bytes(join(overlap, data))
    refused(path, match="overlap")
    path.write_bytes(join(header, data + bytes(8)))  # padded data section
    refused(path, match="padded")


@pytest.mark.parametrize("length", [2**64 - 1, 2**40, _ckptfile.MAX_HEADER_BYTES + 1])
def test_huge_header_lengths_are_refused_before_reading(good, tmp_path, length):
    path = tmp_path / "h.safetensors"
    path.write_bytes(struct.pack("<Q", length) + good[8:])
    refused(path, match="over the limit")


def test_header_longer_than_the_file_is_refused(good, tmp_path):
    path = tmp_path / "h.safetensors"
    path.write_bytes(struct.pack("<Q", len(good)) + good[8:])
    refused(path, match="truncated")


@pytest.mark.parametrize("blob", [b"", b"\x00" * 7, b"\x00" * 8, b"\x02" + b"\x00" * 7 + b"[]"])
def test_tiny_files_are_refused(tmp_path, blob):
    path = tmp_path / "tiny.safetensors"
    path.write_bytes(blob)
    refused(path)


# ---- encodings, duplicates, dtypes, shapes -----------------------------------------------
@pytest.mark.parametrize("raw", [b'{"a": "\xff\xfe"}', "{}".encode("utf-16"),
                                 b"\xef\xbb\xbf{}", b'{"x": 1' + b"9" * 5000 + b"}",
                                 b"[" * 100_000, b"\x00" * 16])
def test_non_utf8_and_non_json_headers_are_refused(tmp_path, raw):
    path = tmp_path / "enc.safetensors"
    path.write_bytes(join(raw, b""))
    refused(path)


def test_duplicate_keys_are_refused_everywhere(good, tmp_path):
    header, data = split(good)
    raw = json.dumps(header).encode()
    path = tmp_path / "dup.safetensors"
    entry = json.dumps(header["0.bias"]).encode()
    path.write_bytes(join(raw[:-1] + b', "0.bias": ' + entry + b"}", data))  # tensor twice
    refused(path, match="'0.bias' twice")
    path.write_bytes(join(raw.replace(b'"dtype": "F32"', b'"dtype": "F32", "dtype": "F32"', 1),
                          data))  # a key twice inside an entry
    refused(path, match="twice")
    meta = dict(header["__metadata__"])
    meta["trainable"] = meta["trainable"][:-1] + ', "0.bias": false}'  # in a metadata string
    path.write_bytes(join({**header, "__metadata__": meta}, data))
    refused(path, match="repeats a key")


@pytest.mark.parametrize("dtype", ["BF16", "F8_E4M3", "float32", "f32", 5, None, ["F32"], ""])
def test_wrong_dtypes_are_refused(good, tmp_path, dtype):
    header, data = split(good)
    header["0.bias"]["dtype"] = dtype
    path = tmp_path / "d.safetensors"
    path.write_bytes(join(header, data))
    refused(path, match="dtype")


@pytest.mark.parametrize("shape", ["[NaN]", "[Infinity]", "[-Infinity, 8]", "[-8]", "[8.0]",
                                   "[true]", "[null]", "8", '["8"]', "[" + "1," * 16 + "8]",
                                   "[[8]]", "[9007199254740993]"])
def test_nan_and_malformed_shapes_are_refused(good, tmp_path, shape):
    header, data = split(good)
    raw = json.dumps(header).replace('"shape": [8]', f'"shape": {shape}', 1)
    assert raw != json.dumps(header)
    path = tmp_path / "s.safetensors"
    path.write_bytes(join(raw.encode(), data))
    refused(path)


def test_shape_and_offsets_must_agree(good, tmp_path):
    header, data = split(good)
    header["0.weight"]["shape"] = [4, 4]  # 64 bytes of a 128-byte range
    path = tmp_path / "s.safetensors"
    path.write_bytes(join(header, data))
    refused(path, match="needs 64 bytes")


# ---- not regular files -------------------------------------------------------------------
def test_fifo_is_refused_without_blocking_or_reading(tmp_path):
    path = tmp_path / "pipe.safetensors"
    os.mkfifo(path)
    # Hold both ends open with 8 bytes waiting, so a reader that did open it could not block
    # on open; it would consume the bytes, which the last assertion checks it did not.
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    try:
        os.write(fd, struct.pack("<Q", 2))
        refused(path, match="FIFO")
        with pytest.raises(up.CheckpointFormatError, match="FIFO"):
            up.load(up.build(up.nn.Dense(2, in_features=2), backend="torch"), path)
        assert os.read(fd, 64) == struct.pack("<Q", 2)
    finally:
        os.close(fd)


def test_symlink_loop_is_a_typed_not_found(tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    a.symlink_to(b)
    b.symlink_to(a)
    refused(a, up.CheckpointNotFoundError, match="loop of symbolic links")


def test_symlink_to_a_good_file_is_followed(good, tmp_path):
    (tmp_path / "real.safetensors").write_bytes(good)
    (tmp_path / "link.safetensors").symlink_to(tmp_path / "real.safetensors")
    assert set(_ckptfile.read(tmp_path / "link.safetensors").arrays()) == set(ARRAYS)


def test_directory_is_a_typed_not_found(tmp_path):
    refused(tmp_path, up.CheckpointNotFoundError, match="is a directory")


@pytest.mark.skipif(not os.path.exists("/proc/self/mem"), reason="no /proc")
def test_proc_self_mem_is_refused():
    refused("/proc/self/mem", match="fewer than the 8-byte")


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null", "/dev/urandom"])
def test_devices_are_refused_without_opening(device):
    if not os.path.exists(device):
        pytest.skip(f"no {device}")
    refused(device, match="a device, not a regular file")


def test_missing_file_and_bad_paths_are_typed(tmp_path):
    refused(tmp_path / "nope.safetensors", up.CheckpointNotFoundError, match="No checkpoint")
    (tmp_path / "f").write_bytes(b"x")
    refused(tmp_path / "f" / "below.safetensors", up.CheckpointNotFoundError)
    for bad in (None, 3, ["a"]):
        with pytest.raises(errors.CheckpointPathError, match="file path") as caught:
            _ckptfile.read(bad)
        assert isinstance(caught.value, TypeError)
    with pytest.raises(up.CheckpointNotFoundError, match="empty"):
        _ckptfile.read("")


def test_unreadable_file_is_a_typed_permission_error(good, tmp_path, monkeypatch):
    path = tmp_path / "locked.safetensors"
    path.write_bytes(good)

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(errors.CheckpointPermissionError, match="locked.safetensors") as caught:
        _ckptfile.read(path)
    assert isinstance(caught.value, PermissionError) and caught.value.errno == errno.EACCES
    assert caught.value.filename == str(path)


def test_leftover_temporary_file_of_a_save_is_recognised(good, tmp_path):
    path = tmp_path / ".model.safetensors.unifparam-tmp-1a2b3c4d"
    path.write_bytes(good)  # even complete: it was never renamed into place
    refused(path, match="temporary file of a save")
    assert _ckptfile.is_temp_name(path) and not _ckptfile.is_temp_name(tmp_path / "m.st")


# ---- size caps ---------------------------------------------------------------------------
def _many(n: int) -> bytes:
    parts = [f'"t{i}":{{"dtype":"U8","shape":[1],"data_offsets":[{i},{i + 1}]}}'
             for i in range(n)]
    return join(("{" + ",".join(parts) + "}").encode(), bytes(n))


def test_a_million_entry_header_is_refused_by_the_value_cap(tmp_path):
    path = tmp_path / "many.safetensors"
    path.write_bytes(_many(10**6))
    refused(path, match=r"over the limit of 4,000,000 \(at most 100,000 tensors")


def test_more_tensors_than_the_cap_are_refused_while_parsing(tmp_path):
    path = tmp_path / "many.safetensors"
    path.write_bytes(_many(_ckptfile.MAX_TENSORS + 1))
    refused(path, match="more than 100,000 tensors")


def test_cap_many_tensors_still_read_and_inspect_is_bounded(tmp_path):
    path = tmp_path / "many.safetensors"
    path.write_bytes(_many(_ckptfile.MAX_TENSORS))
    assert len(_ckptfile.read(path).tensors) == _ckptfile.MAX_TENSORS
    text = checkpoint.inspect_file(path)
    assert text.endswith(f"... and {_ckptfile.MAX_TENSORS - MAX_TABLE_ROWS:,} more tensors")
    assert len(text.splitlines()) < MAX_TABLE_ROWS + 10


# ---- inspect degrades to the tensor table ------------------------------------------------
def _with_spec(good: bytes, tmp_path: Path, spec: object, change=None) -> Path:
    header, data = split(good)
    header["__metadata__"]["spec"] = spec if isinstance(spec, str) else json.dumps(spec)
    if change:
        change(header)
    path = tmp_path / "spec.safetensors"
    path.write_bytes(join(header, data))
    return path


def test_inspect_shows_the_spec_summary_of_a_good_file(good, tmp_path):
    text = checkpoint.inspect_file(_with_spec(good, tmp_path, SPEC))
    assert "Dense" in text and "showing the tensors" not in text


def test_inspect_of_a_flattened_weight_shows_the_table(good, tmp_path):
    def flatten(header):
        header["0.weight"]["shape"] = [32]
    text = checkpoint.inspect_file(_with_spec(good, tmp_path, SPEC, flatten))
    assert "does not match the tensors' shapes; showing the tensors" in text
    assert "0.weight   (32,)    float32" in text


def test_inspect_of_a_self_containing_spec_shows_the_table(good, tmp_path):
    spec = {"format": "unifparam.spec/1",
            "root": {"kind": "Sequential", "id": 0, "layers": [{"ref": 0}]}}
    text = checkpoint.inspect_file(_with_spec(good, tmp_path, spec))
    assert "the recorded spec contains itself; showing the tensors" in text


def test_inspect_of_an_exponentially_shared_spec_shows_the_table(good, tmp_path):
    node = {"kind": "Dense", "id": 0, "args": {"units": 8, "activation": None,
                                               "use_bias": True, "in_features": 4}}
    for k in range(1, 60):  # 2**59 uses of one Dense if walked as a tree
        node = {"kind": "Sequential", "id": k, "layers": [node, {"ref": k - 1}]}
    text = checkpoint.inspect_file(_with_spec(good, tmp_path, {"format": "unifparam.spec/1",
                                                               "root": node}))
    assert "layer uses; showing the tensors" in text


@pytest.mark.parametrize("spec", ["{" * 5000 + "}" * 5000, "[]", '"x"',
                                  '{"format": "unifparam.spec/1", "root": {"ref": 9}}',
                                  '{"format": "unifparam.spec/1", "root": {"kind": "Dense", '
                                  '"args": {"units": -1, "activation": 3, "use_bias": 1, '
                                  '"in_features": "x"}}}'])
def test_inspect_of_a_junk_spec_shows_the_table(good, tmp_path, spec):
    try:
        text = checkpoint.inspect_file(_with_spec(good, tmp_path, spec))
    except up.CheckpointFormatError:
        return  # refused as a whole: also fine
    assert "showing the tensors" in text and "0.weight" in text


# ---- digests -----------------------------------------------------------------------------
def test_corrupted_tensor_bytes_are_named_and_refused(good, tmp_path):
    path = tmp_path / "c.safetensors"
    blob = bytearray(good)
    header, data = split(good)
    start = len(good) - len(data) + header["1.weight"]["data_offsets"][0]
    blob[start + 5] ^= 0x40
    path.write_bytes(bytes(blob))
    ck = _ckptfile.read(path)  # the header is fine
    with pytest.raises(up.CheckpointFormatError, match="tensor '1.weight' does not match its "
                                                       "recorded sha256t digest"):
        ck.arrays()
    assert not np.array_equal(_ckptfile.read(path, verify=False).arrays()["1.weight"],
                              ARRAYS["1.weight"])  # the opt-out really skips the check
    net = up.build(up.nn.Sequential(up.nn.Dense(8, in_features=4), up.nn.Dense(3)),
                   backend="torch")
    with pytest.raises(up.CheckpointFormatError, match="1.weight"):
        up.load(net, path, strict=False)


@pytest.mark.parametrize("digests", ['{"0.weight": "sha256:00"}', "[]", "{}", "nope",
                                     '{"0.weight": "md5:' + "0" * 32 + '"}'])
def test_malformed_digests_are_refused(good, tmp_path, digests):
    header, data = split(good)
    header["__metadata__"]["digests"] = digests
    path = tmp_path / "g.safetensors"
    path.write_bytes(join(header, data))
    refused(path, match="digest")


def test_files_without_digests_still_load(tmp_path):
    path = tmp_path / "plain.safetensors"
    safetensors_numpy.save_file(ARRAYS, str(path))
    ck = _ckptfile.read(path)
    assert ck.digests == {}
    for name, value in ck.arrays().items():
        np.testing.assert_array_equal(value, ARRAYS[name])


# ---- every error is typed twice ----------------------------------------------------------
@pytest.mark.parametrize("cls,builtin", [
    (errors.CheckpointFormatError, ValueError), (errors.CheckpointNotFoundError,
                                                 FileNotFoundError),
    (errors.CheckpointIOError, OSError), (errors.CheckpointPermissionError, PermissionError),
    (errors.CheckpointPathError, TypeError), (errors.CheckpointMismatchError, ValueError)])
def test_checkpoint_errors_are_unifparam_errors_and_builtins(cls, builtin):
    assert issubclass(cls, errors.CheckpointError) and issubclass(cls, errors.UnifparamError)
    assert issubclass(cls, builtin)
    assert str(cls("message")) == "message"


def test_no_stat_mode_is_read_but_a_regular_file():
    for mode in (stat.S_IFIFO, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFSOCK, stat.S_IFLNK):
        with pytest.raises(up.CheckpointFormatError, match="not a regular file"):
            _ckptfile._require_regular("p", mode)


# ---- the command line never shows a traceback -------------------------------------------
def test_unifparam_inspect_command_on_hostile_files(good, tmp_path, capsys):
    from unifparam._cli import main

    def flatten(header):
        header["0.weight"]["shape"] = [32]
    flat = _with_spec(good, tmp_path, SPEC, flatten)
    assert main(["inspect", str(flat)]) == 0
    assert "0.weight   (32,)" in capsys.readouterr().out
    loop = {"format": "unifparam.spec/1",
            "root": {"kind": "Sequential", "id": 0, "layers": [{"ref": 0}]}}
    assert main(["inspect", str(_with_spec(good, tmp_path, loop))]) == 0
    assert "contains itself" in capsys.readouterr().out
    many = tmp_path / "many.safetensors"
    many.write_bytes(_many(10**6))
    os.mkfifo(tmp_path / "pipe")
    for bad, says in ((many, "over the limit"), (tmp_path / "pipe", "FIFO"),
                      (tmp_path / "nope", "No checkpoint")):
        assert main(["inspect", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and says in err and "Traceback" not in err
