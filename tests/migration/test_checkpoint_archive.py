"""Packing and hostile-archive unpacking of checkpoints."""

import hashlib
import io
import os
import subprocess
import tarfile

import pytest

from agentd.control.checkpoint_archive import CHUNK_BYTES, ArchiveError, iter_chunks, pack, sha256_file, unpack


def _tree(root):
    (root / "sub").mkdir(parents=True)
    (root / "state.json").write_text('{"step": 7}')
    (root / "sub" / "weights.bin").write_bytes(os.urandom(3 * CHUNK_BYTES + 17))
    os.symlink("sub/weights.bin", root / "latest")
    return root


def test_pack_unpack_roundtrip_keeps_files_and_digest(tmp_path):
    src = _tree(tmp_path / "src")
    info = pack(src, tmp_path / "c.tar")
    assert info.size_bytes == (tmp_path / "c.tar").stat().st_size
    assert info.sha256 == sha256_file(info.path)
    chunks = list(iter_chunks(info.path))
    assert all(len(d) == CHUNK_BYTES for _, d in chunks[:-1])
    assert hashlib.sha256(b"".join(d for _, d in chunks)).hexdigest() == info.sha256
    total = unpack(info.path, tmp_path / "dst", limit_bytes=10 * CHUNK_BYTES, sha256=info.sha256)
    assert total == 3 * CHUNK_BYTES + 17 + len('{"step": 7}')
    assert (tmp_path / "dst" / "state.json").read_text() == '{"step": 7}'
    assert (tmp_path / "dst" / "sub" / "weights.bin").read_bytes() == (src / "sub" / "weights.bin").read_bytes()
    assert os.readlink(tmp_path / "dst" / "latest") == "sub/weights.bin"


def test_pack_of_missing_dir_says_no_checkpoint(tmp_path):
    with pytest.raises(ArchiveError) as e:
        pack(tmp_path / "nope", tmp_path / "c.tar")
    assert e.value.reason == "missing" and "wrote no checkpoint" in e.value.message


def _evil(tmp_path, build) -> str:
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        build(tar)
    return path


def _file(tar, name, data=b"x"):
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    tar.addfile(ti, io.BytesIO(data))


def _link(tar, name, target, kind):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.linkname = target
    tar.addfile(ti)


@pytest.mark.parametrize("label,build,words", [
    ("absolute", lambda t: _file(t, "/etc/evil"), "absolute path"),
    ("dotdot", lambda t: _file(t, "a/../../evil"), "'..'"),
    ("symlink-out", lambda t: _link(t, "l", "../../etc", tarfile.SYMTYPE), "leaves the checkpoint"),
    ("symlink-abs", lambda t: _link(t, "l", "/etc/passwd", tarfile.SYMTYPE), "absolute path"),
    ("hardlink-out", lambda t: _link(t, "h", "/etc/passwd", tarfile.LNKTYPE), "hard link"),
    ("hardlink-dotdot", lambda t: _link(t, "h", "../x", tarfile.LNKTYPE), "hard link"),
    ("chardev", lambda t: _link(t, "dev", "", tarfile.CHRTYPE), "device"),
    ("fifo", lambda t: _link(t, "fifo", "", tarfile.FIFOTYPE), "FIFO"),
])
def test_hostile_archives_are_refused_and_leave_nothing(tmp_path, label, build, words):
    path = _evil(tmp_path, build)
    with pytest.raises(ArchiveError) as e:
        unpack(path, tmp_path / "dst")
    assert e.value.reason == "unsafe", e.value.message
    assert words in e.value.message
    assert not (tmp_path / "dst").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dst")]


def test_symlink_then_write_through_it_cannot_escape(tmp_path):
    # A link inside is fine, but the data filter still refuses writing outside through one.
    def build(t):
        _link(t, "inner", "sub", tarfile.SYMTYPE)
        _file(t, "sub/ok", b"ok")
    unpack(_evil(tmp_path, build), tmp_path / "dst")
    assert (tmp_path / "dst" / "sub" / "ok").read_bytes() == b"ok"


def test_quota_is_enforced_before_writing(tmp_path):
    path = _evil(tmp_path, lambda t: (_file(t, "a", b"x" * 600), _file(t, "b", b"y" * 600)))
    with pytest.raises(ArchiveError) as e:
        unpack(path, tmp_path / "dst", limit_bytes=1000)
    assert e.value.reason == "too_large" and "1000-byte quota" in e.value.message
    assert not (tmp_path / "dst").exists()


def test_digest_mismatch_and_garbage_are_corrupt(tmp_path):
    src = _tree(tmp_path / "src")
    info = pack(src, tmp_path / "c.tar")
    with pytest.raises(ArchiveError) as e:
        unpack(info.path, tmp_path / "dst", sha256="0" * 64)
    assert e.value.reason == "corrupt" and "digest mismatch" in e.value.message
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(ArchiveError) as e:
        unpack(tmp_path / "junk.tar", tmp_path / "dst2")
    assert e.value.reason == "corrupt"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a tmpfs")
def test_disk_full_is_reported_clearly(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(3 * CHUNK_BYTES))
    info = pack(src, tmp_path / "c.tar")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        with pytest.raises(ArchiveError) as e:
            unpack(info.path, small / "dst")
        assert e.value.reason == "disk_full" and "disk full" in e.value.message
        assert not (small / "dst").exists()
        with pytest.raises(ArchiveError) as e:
            pack(src, small / "c.tar")
        assert e.value.reason == "disk_full"
    finally:
        subprocess.run(["umount", str(small)], check=True)


def _feed(unpacker, path, step=100_003):
    data = path.read_bytes()
    for i in range(0, len(data), step):
        unpacker.feed(data[i:i + step])


def test_stream_unpacker_matches_unpack(tmp_path):
    from agentd.control.checkpoint_archive import StreamUnpacker

    src = _tree(tmp_path / "src")
    info = pack(src, tmp_path / "c.tar")
    u = StreamUnpacker(tmp_path / "dst", limit_bytes=10 * CHUNK_BYTES)
    _feed(u, info.path)
    assert not (tmp_path / "dst").exists(), "nothing may appear before finish()"
    assert u.finish() == 3 * CHUNK_BYTES + 17 + len('{"step": 7}')
    assert (tmp_path / "dst" / "sub" / "weights.bin").read_bytes() == (src / "sub" / "weights.bin").read_bytes()
    assert os.readlink(tmp_path / "dst" / "latest") == "sub/weights.bin"
    assert not (tmp_path / ".dst.unpacking").exists()


@pytest.mark.parametrize("build,reason", [
    (lambda t: (_file(t, "ok", b"fine"), _file(t, "a/../../evil")), "unsafe"),
    (lambda t: _link(t, "l", "../../etc", tarfile.SYMTYPE), "unsafe"),
    (lambda t: _link(t, "dev", "", tarfile.CHRTYPE), "unsafe"),
    (lambda t: (_file(t, "a", b"x" * 600), _file(t, "b", b"y" * 600)), "too_large"),
])
def test_stream_unpacker_refuses_hostile_streams(tmp_path, build, reason):
    from agentd.control.checkpoint_archive import StreamUnpacker

    path = _evil(tmp_path, build)
    u = StreamUnpacker(tmp_path / "dst", limit_bytes=1000)
    _feed(u, path, step=333)
    with pytest.raises(ArchiveError) as e:
        u.finish()
    assert e.value.reason == reason, e.value.message
    assert not (tmp_path / "dst").exists() and not (tmp_path / ".dst.unpacking").exists()
    assert not (tmp_path.parent / "evil").exists()


def test_stream_unpacker_garbage_and_abort(tmp_path):
    from agentd.control.checkpoint_archive import StreamUnpacker

    u = StreamUnpacker(tmp_path / "dst")
    u.feed(b"\x01" * 5000)
    with pytest.raises(ArchiveError) as e:
        u.finish()
    assert e.value.reason == "corrupt"
    u2 = StreamUnpacker(tmp_path / "dst2")
    u2.feed(b"\x00" * 100)
    u2.abort()
    assert not (tmp_path / ".dst2.unpacking").exists() and not (tmp_path / "dst2").exists()
