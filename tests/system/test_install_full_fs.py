"""An offline install into a tree on a real file system that is full, or nearly: whatever step runs out of
space (a boot file, a directory, an enable link, the manifest), the install fails with one error line and a
hint, and its rollback leaves the tree exactly as it was (an audit found an empty directory left behind).

The file system is a real one mounted for the test: a tmpfs limited with size= (its directories cost no
space, so a directory is made and the file in it then fails) and a loop-mounted ext4 image (every
directory and file costs a block, so every step can be the one that fails). It is filled with one file
that leaves exactly K blocks free, for K = 0, 1, 2, ... until the install succeeds. A tmpfs whose inodes run
out (remounted with K inodes free) makes the other steps fail: a link after the directory made for it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

TOOL = Path(sys.executable).parent / "taskserver-install"
INITS = ("systemd", "sysv", "upstart", "openrc", "runit")


def snapshot(root: Path) -> dict[str, str]:
    """Every path under root (but the filler) -> its kind, mode and content or link target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = p.lstat()
            what = oct(st.st_mode)
            if p.is_symlink():
                what += " -> " + os.readlink(p)
            elif p.is_file() and name != "filler":
                what += " " + p.read_bytes().hex()
            out[str(p.relative_to(root))] = what
    return out


def mount(kind: str, where: Path, image: Path) -> None:
    if kind == "tmpfs":
        argv = ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(where)]
    else:
        subprocess.run(["truncate", "-s", "4M", str(image)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "1024", "-m", "0", str(image)], check=True,
                       capture_output=True)
        argv = ["mount", "-o", "loop", str(image), str(where)]
    res = subprocess.run(argv, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a {kind} here: {res.stderr.strip()}")


@pytest.fixture(params=["tmpfs", "ext4"])
def small_fs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    kind = request.param
    if os.geteuid() != 0:
        pytest.skip("mounting a file system needs root")
    if kind == "ext4" and shutil.which("mkfs.ext4") is None:
        pytest.skip("mkfs.ext4 is not installed (e2fsprogs)")
    where = tmp_path / "small"
    where.mkdir()
    mount(kind, where, tmp_path / "fs.img")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)


def make_tree(root: Path) -> None:
    """What each init system's offline install needs in a bare tree (no registrar: SysV without enabling)."""
    for d in ("etc/init.d", "var/lib", "etc/sv", "etc/service", "etc/runlevels/default"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc/os-release").write_text("ID=debian\n")
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")


def leave_free(root: Path, blocks: int) -> None:
    """Grow or shrink the filler so that exactly ``blocks`` blocks stay free for the install."""
    filler = root / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, 0)
        os.fsync(fd)
        st = os.statvfs(root)
        size = (st.f_bavail - blocks) * st.f_frsize
        if size > 0:
            os.posix_fallocate(fd, 0, size)
        os.fsync(fd)
    finally:
        os.close(fd)


@pytest.mark.parametrize("init", INITS)
def test_an_install_that_runs_out_of_space_leaves_the_tree_as_it_was(small_fs: Path, init: str) -> None:
    if init == "systemd" and shutil.which("systemctl") is None:
        pytest.skip("systemctl is not installed (the systemd backend enables with systemctl --root)")
    make_tree(small_fs)
    args = ["--init", init, "--root", str(small_fs), "--no-start"]
    args += ["--no-enable"] if init == "sysv" else []
    failures = []
    for blocks in range(64):
        leave_free(small_fs, blocks)
        before = snapshot(small_fs)
        res = subprocess.run([str(TOOL), *args], capture_output=True, text=True, check=False, timeout=120)
        if res.returncode == 0:
            break
        failures.append(blocks)
        lines = res.stderr.splitlines()
        assert res.returncode == 1 and len(lines) == 2, (blocks, res.stderr)
        assert snapshot(small_fs) == before, (blocks, res.stderr)
        assert "rolled back everything this install did" in lines[0], lines[0]
        if "command failed" in lines[0]:  # the registrar ran out of space: its own error line
            assert "systemctl" in lines[0] and "Failed to enable" in lines[0], lines[0]
        else:
            assert "No space left on device" in lines[0], lines[0]
            assert lines[1].startswith("taskserver-install: hint: free space"), lines[1]
    else:
        pytest.fail("the install never succeeded, even with 64 blocks free")
    assert failures and failures[0] == 0  # a full file system did fail it


@pytest.mark.parametrize("init", [*INITS, "systemd --user"])
def test_an_install_that_runs_out_of_inodes_leaves_the_tree_as_it_was(tmp_path: Path, init: str) -> None:
    """Every file, directory and link costs an inode: with K inodes free, the K+1st thing the install makes
    fails, whatever it is. A user unit's enable link, made in a .wants directory made for it, left that
    directory behind when the link failed."""
    if os.geteuid() != 0:
        pytest.skip("mounting a file system needs root")
    if init.startswith("systemd") and shutil.which("systemctl") is None:
        pytest.skip("systemctl is not installed (the systemd backend enables with systemctl --root)")
    root = tmp_path / "small"
    root.mkdir()
    mount("tmpfs", root, tmp_path / "unused")
    try:
        make_tree(root)
        (root / "root").mkdir()
        name, *user = init.split()
        args = ["--init", name, "--root", str(root), "--no-start", *user]
        args += ["--no-enable"] if init == "sysv" else []
        for free in range(64):
            st = os.statvfs(root)
            used = st.f_files - st.f_ffree
            subprocess.run(["mount", "-o", f"remount,nr_inodes={used + free}", str(root)], check=True)
            before = snapshot(root)
            res = subprocess.run([str(TOOL), *args], capture_output=True, text=True, check=False, timeout=120,
                                 env={"PATH": os.environ["PATH"], "HOME": "/root"})
            if res.returncode == 0:
                break
            lines = res.stderr.splitlines()
            assert res.returncode == 1 and len(lines) == 2, (free, res.stderr)
            assert "rolled back everything this install did" in lines[0], (free, lines[0])
            assert snapshot(root) == before, (free, res.stderr)
        else:
            pytest.fail("the install never succeeded, even with 64 inodes free")
    finally:
        subprocess.run(["umount", str(root)], check=False)
