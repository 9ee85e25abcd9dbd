"""LocalStore: reads, atomic writes, containment (symlinks included), caps, health."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from fabstir_node.errors import ErrorCode, FabstirError, StorageNotFound, StorageTooLarge, StorageUnavailable
from fabstir_node.storage.base import Storage
from fabstir_node.storage.local import LocalStore

DB = "home/vector-databases/0xabc/docs"


@pytest.fixture
def dirs(tmp_path):
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.json").write_bytes(b'{"secret": true}')
    return root, outside


async def test_put_then_get_round_trips_and_creates_directories(dirs):
    root, _ = dirs
    store = LocalStore(root)
    assert isinstance(store, Storage)
    await store.put(f"{DB}/manifest.json", b"first")
    await store.put(f"{DB}/manifest.json", b"second version")
    assert await store.get(f"{DB}/manifest.json") == b"second version"
    assert (root / DB / "manifest.json").read_bytes() == b"second version"
    assert sorted(p.name for p in (root / DB).iterdir()) == ["manifest.json"]  # no temp files left
    assert store.stats.requests == 3 and store.stats.errors == 0
    assert store.stats.bytes == len(b"first") + 2 * len(b"second version")


async def test_missing_object_and_directory_are_not_found(dirs):
    root, _ = dirs
    store = LocalStore(root)
    with pytest.raises(StorageNotFound):
        await store.get(f"{DB}/manifest.json")
    (root / DB).mkdir(parents=True)
    with pytest.raises(StorageNotFound):
        await store.get(DB)
    assert store.stats.errors == 2


@pytest.mark.parametrize("bad", ["../outside/secret.json", "/etc/passwd", "home/../../x", "home//x", "etc/x"])
async def test_bad_paths_are_refused_before_any_io(tmp_path, bad):
    store = LocalStore(tmp_path / "does-not-exist")  # any I/O would fail differently
    for operation in (store.get(bad), store.put(bad, b"x")):
        with pytest.raises(FabstirError) as info:
            await operation
        assert info.value.code is ErrorCode.INVALID_PATH
    assert store.stats.requests == 0


async def test_relative_symlink_escaping_root_is_refused(dirs):
    root, outside = dirs
    (root / DB).mkdir(parents=True)
    os.symlink(os.path.relpath(outside / "secret.json", root / DB), root / DB / "manifest.json")
    assert (root / DB / "manifest.json").read_bytes()  # the link itself works
    with pytest.raises(StorageNotFound):
        await LocalStore(root).get(f"{DB}/manifest.json")


async def test_absolute_symlink_escaping_root_is_refused(dirs):
    root, outside = dirs
    (root / DB).mkdir(parents=True)
    os.symlink(outside / "secret.json", root / DB / "manifest.json")
    with pytest.raises(StorageNotFound):
        await LocalStore(root).get(f"{DB}/manifest.json")


async def test_symlinked_parent_directory_is_refused_for_reads_and_writes(dirs):
    root, outside = dirs
    (root / "home").mkdir()
    os.symlink(outside, root / "home" / "vector-databases")
    store = LocalStore(root)
    with pytest.raises(StorageNotFound):
        await store.get("home/vector-databases/secret.json")
    with pytest.raises(StorageUnavailable):
        await store.put("home/vector-databases/new/manifest.json", b"x")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.json"]


async def test_symlinks_inside_root_are_followed(dirs):
    root, _ = dirs
    store = LocalStore(root)
    await store.put("home/real/manifest.json", b"inside")
    os.symlink("real", root / "home" / "alias")
    assert await store.get("home/alias/manifest.json") == b"inside"


async def test_symlinked_root_is_fine(dirs, tmp_path):
    root, _ = dirs
    os.symlink(root, tmp_path / "root-link")
    store = LocalStore(tmp_path / "root-link")
    await store.put("home/x.json", b"via link")
    assert (root / "home" / "x.json").read_bytes() == b"via link"
    assert await store.get("home/x.json") == b"via link"


async def test_size_caps(dirs):
    root, _ = dirs
    store = LocalStore(root, max_bytes=10)
    await store.put("home/small", b"0123456789")
    await store.put("home/big", b"0123456789A")
    assert await store.get("home/small") == b"0123456789"
    with pytest.raises(StorageTooLarge):
        await store.get("home/big")
    with pytest.raises(StorageTooLarge):
        await store.get("home/small", max_bytes=9)
    assert await LocalStore(root, max_bytes=None).get("home/big") == b"0123456789A"


async def test_health_reports_a_usable_root(dirs, tmp_path):
    root, _ = dirs
    assert (await LocalStore(root).health()).ok
    missing = await LocalStore(tmp_path / "missing").health()
    assert not missing.ok and "missing" in missing.detail
    (tmp_path / "file").write_bytes(b"")
    assert not (await LocalStore(tmp_path / "file").health()).ok


async def test_health_reports_a_read_only_root(dirs):
    root, _ = dirs
    with _read_only(root):
        status = await LocalStore(root).health()
        with pytest.raises(StorageUnavailable):
            await LocalStore(root).put("home/x", b"x")
    assert not status.ok and "not writable" in status.detail
    assert (await LocalStore(root).health()).ok  # and the probe left nothing behind
    assert list(root.iterdir()) == []


class _read_only:
    """chmod a-w, plus the immutable flag when running as root (root ignores modes)."""

    def __init__(self, path):
        self.path = path
        self.immutable = False

    def __enter__(self):
        self.path.chmod(0o555)
        if os.geteuid() == 0:
            chattr = shutil.which("chattr")
            made = chattr is not None and subprocess.run([chattr, "+i", str(self.path)], capture_output=True)
            if not made or made.returncode:
                self.path.chmod(0o755)
                pytest.skip("running as root without a working chattr: cannot make a directory read-only")
            self.immutable = True
        return self

    def __exit__(self, *exc):
        if self.immutable:
            subprocess.run([shutil.which("chattr"), "-i", str(self.path)], check=True)
        self.path.chmod(0o755)


async def test_delete(dirs):
    root, _ = dirs
    store = LocalStore(root)
    await store.put("home/x", b"x")
    await store.delete("home/x")
    assert not (root / "home" / "x").exists()
    with pytest.raises(StorageNotFound):
        await store.delete("home/x")
