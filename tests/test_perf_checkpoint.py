"""The pipelined save writes the same bytes whatever the piece size, tiles or threads."""

import numpy as np
import pytest

from unifparam import _buffers, _ckptfile

META = {"format": _ckptfile.FORMAT, "format_version": _ckptfile.FORMAT_VERSION}


def values():
    rng = np.random.default_rng(0)
    kernel = rng.random((300, 517), dtype=np.float32)
    return {"t": kernel.T, "c": kernel, "s": kernel[::3, ::2], "b": kernel.astype(">f4").T,
            "v": rng.random(4099), "i": np.arange(12, dtype=np.int16).reshape(3, 4)}


@pytest.mark.parametrize("chunk", [1000, 4096, 60_000])
def test_threaded_tiled_pieces_give_the_inline_bytes(tmp_path, monkeypatch, chunk):
    _ckptfile.write(tmp_path / "inline.safetensors", values(), META)  # one piece each, inline
    monkeypatch.setattr(_ckptfile, "CHUNK", chunk)
    monkeypatch.setattr(_ckptfile, "PIPELINE_BYTES", 1)  # every piece through both threads
    monkeypatch.setattr(_buffers, "TILE", 7)  # tiles that do not divide the shapes
    monkeypatch.setattr(_buffers, "PARALLEL_BYTES", 1)  # tiles copied on every core
    _ckptfile.write(tmp_path / "piped.safetensors", values(), META)
    assert (tmp_path / "piped.safetensors").read_bytes() == \
        (tmp_path / "inline.safetensors").read_bytes()
    got = _ckptfile.read(tmp_path / "piped.safetensors").arrays()  # digests verified
    for name, want in values().items():
        np.testing.assert_array_equal(got[name], want)


def test_a_failed_write_in_the_pipeline_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(_ckptfile, "CHUNK", 4096)
    monkeypatch.setattr(_ckptfile, "PIPELINE_BYTES", 1)
    calls = []

    def failing(fd, data):
        calls.append(len(data))
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        return real(fd, data)
    real = _ckptfile._write_all
    monkeypatch.setattr(_ckptfile, "_write_all", failing)
    with pytest.raises(_ckptfile.CheckpointIOError, match="disk is full"):
        _ckptfile.write(tmp_path / "m.safetensors", values(), META)
    assert list(tmp_path.iterdir()) == []


def test_released_pages_read_back_the_same_values(tmp_path):
    _ckptfile.write(tmp_path / "m.safetensors", values(), META)
    ck = _ckptfile.read(tmp_path / "m.safetensors")
    arrays = ck.arrays()
    before = {n: a.copy() for n, a in arrays.items()}
    for a in arrays.values():
        ck.release(a)
    for name, a in arrays.items():
        np.testing.assert_array_equal(a, before[name])


def test_load_releases_copied_tensors_and_keeps_adopted_ones(tmp_path, monkeypatch):
    from unifparam import checkpoint
    kept = []
    _ckptfile.write(tmp_path / "m.safetensors", values(), META)
    pages = checkpoint._Pages(_ckptfile.read(tmp_path / "m.safetensors"))
    released = []
    monkeypatch.setattr(pages.ck, "release", released.append)
    arrays = pages.ck.arrays()
    for name in ("c", "v"):
        value = pages.track(arrays[name])
        if name == "c":
            kept.append(value)  # adopted: the backend holds a reference
        del value
    pages.settle()
    assert [id(a) for a in released] == [id(arrays["v"])]
