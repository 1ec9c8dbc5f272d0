"""Packing and hostile-archive unpacking of checkpoints."""

import hashlib
import io
import os
import subprocess
import tarfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentd.control.checkpoint_archive import CHUNK_BYTES, ArchiveError

from .tarfiles import iter_chunks, pack, sha256_file, unpack


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


def test_missing_checkpoint_dir_says_no_checkpoint(tmp_path):
    from agentd.control.checkpoint_archive import CheckpointTar

    with pytest.raises(ArchiveError) as e:
        CheckpointTar(tmp_path / "nope")
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


def test_checkpoint_tar_reads_any_range_of_a_valid_tar(tmp_path):
    from agentd.control.checkpoint_archive import CheckpointTar

    src = _tree(tmp_path / "src")
    deep = src / ("long-directory-name-" * 6) / "x"
    deep.mkdir(parents=True)
    (deep / ("tensor-" * 20 + ".bin")).write_bytes(os.urandom(5000))
    (src / "empty").write_bytes(b"")
    tar = CheckpointTar(src)
    whole = b"".join(tar.read(off, 777_777) for off in range(0, tar.size_bytes, 777_777))
    assert len(whole) == tar.size_bytes and tar.read(tar.size_bytes - 10, 100) == whole[-10:]
    assert tar.read(123_456, 1 << 20) == whole[123_456:123_456 + (1 << 20)]
    info = pack(src, tmp_path / "c.tar")
    assert (tmp_path / "c.tar").read_bytes() == whole and info.files == tar.files == 5
    with tarfile.open(tmp_path / "c.tar") as t:
        names = {m.name: m for m in t.getmembers()}
        long_name = posixpath_rel(deep, src) + "/" + "tensor-" * 20 + ".bin"
        assert t.extractfile(names[long_name]).read() == (deep / ("tensor-" * 20 + ".bin")).read_bytes()
        assert names["latest"].issym() and names["latest"].linkname == "sub/weights.bin"
        assert names["empty"].size == 0 and names["sub"].isdir()


def posixpath_rel(path, root):
    return path.relative_to(root).as_posix()


def test_checkpoint_tar_refuses_fifos_and_files_that_shrink(tmp_path):
    from agentd.control.checkpoint_archive import CheckpointTar

    src = _tree(tmp_path / "src")
    tar = CheckpointTar(src)
    (src / "sub" / "weights.bin").write_bytes(b"short now")
    with pytest.raises(ArchiveError) as e:
        b"".join(tar.read(off, CHUNK_BYTES) for off in range(0, tar.size_bytes, CHUNK_BYTES))
    assert e.value.reason == "corrupt" and "weights.bin shrank" in e.value.message
    os.mkfifo(src / "pipe")
    with pytest.raises(ArchiveError) as e:
        CheckpointTar(src)
    assert e.value.reason == "unsafe" and "pipe" in e.value.message


def test_ordered_digest_hashes_each_byte_once_across_resends():
    from agentd.control.checkpoint_archive import OrderedDigest

    data = os.urandom(10_000)
    d = OrderedDigest()
    for off, n in [(0, 3000), (3000, 3000), (1000, 4000), (4000, 6000), (0, 10_000)]:
        d.update(off, data[off:off + n])
    assert d.upto == 10_000 and d.hexdigest() == hashlib.sha256(data).hexdigest()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mangled_archives_unpack_inside_or_fail_cleanly(tmp_path_factory, data):
    """Flip, cut and splice bytes of a real checkpoint tar: the unpacker either succeeds with
    every entry inside its directory or raises ArchiveError, and never leaves a half tree."""
    from agentd.control.checkpoint_archive import StreamUnpacker

    root = tmp_path_factory.mktemp("fuzz")
    src = root / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / ("n" * 120)).write_bytes(b"w" * 700)
    (src / "state.json").write_text('{"step": 1}')
    os.symlink("d", src / "link")
    blob = bytearray((pack(src, root / "c.tar")).path.read_bytes())
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(blob) - 1))
        kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if kind == "flip":
            blob[pos] = data.draw(st.integers(0, 255))
        elif kind == "cut":
            del blob[pos:pos + data.draw(st.integers(1, 600))]
        else:
            blob[pos:pos] = data.draw(st.binary(min_size=1, max_size=600))
    (root / "outside").mkdir()
    dest = root / "outside" / "inner" / "dst"
    dest.parent.mkdir()
    u = StreamUnpacker(dest, limit_bytes=1 << 20)
    step = data.draw(st.integers(1, 4096))
    for i in range(0, len(blob), step):
        u.feed(bytes(blob[i:i + step]))
    try:
        u.finish()
    except ArchiveError as exc:
        assert exc.reason in ("corrupt", "unsafe", "too_large"), exc
        assert not dest.exists()
    for p in (root / "outside").rglob("*"):
        assert p == dest.parent or dest in (p, *p.parents), f"{p} was written outside the checkpoint"
