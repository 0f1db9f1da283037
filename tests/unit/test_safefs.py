"""installer.safefs.Tree: paths of a target system resolved inside its root by the kernel (openat2
RESOLVE_IN_ROOT), on real files in tmp_path. Each test puts a host directory next to the tree that a
symlink of the tree names; nothing may reach it."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskserver.installer import outside
from taskserver.installer.safefs import Tree


@pytest.fixture
def host(tmp_path: Path) -> Path:
    h = tmp_path / "host"
    h.mkdir()
    (h / "secret").write_text("host file\n")
    return h


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    t = tmp_path / "tree"
    (t / "real").mkdir(parents=True)
    return t


def test_an_absolute_link_is_read_inside_the_tree(tree: Path, host: Path) -> None:
    (tree / "etc").symlink_to(host)  # the host's path, taken inside the tree: tree/<host path>
    assert Tree(tree).read(Path("/etc/secret")) is None
    (tree / str(host).lstrip("/")).mkdir(parents=True)
    (tree / str(host).lstrip("/") / "secret").write_text("tree file\n")
    assert Tree(tree).read(Path("/etc/secret")) == b"tree file\n"


def test_dotdot_cannot_climb_out(tree: Path, host: Path) -> None:
    (tree / "up").symlink_to("../" * 20 + str(host).lstrip("/"))
    assert Tree(tree).read(Path("/up/secret")) is None
    (tree / "etc").mkdir()
    (tree / "etc/f").write_text("tree\n")
    assert Tree(tree).read(Path("/etc/../../../../etc/f")) == b"tree\n"


def test_writing_replaces_a_final_link_instead_of_writing_through_it(tree: Path, host: Path) -> None:
    (tree / "real/unit").symlink_to(host / "secret")
    Tree(tree).write(Path("/real/unit"), b"ours\n", 0o644)
    assert (tree / "real/unit").read_bytes() == b"ours\n" and not (tree / "real/unit").is_symlink()
    assert (host / "secret").read_text() == "host file\n"


def test_unlink_and_remove_tree_remove_the_link_itself(tree: Path, host: Path) -> None:
    (tree / "real/a").symlink_to(host / "secret")
    (tree / "real/b").symlink_to(host)
    assert Tree(tree).unlink(Path("/real/a")) and Tree(tree).remove_tree(Path("/real/b"))
    assert (host / "secret").exists() and not (tree / "real/a").is_symlink()
    assert Tree(tree).unlink(Path("/real/a")) is False  # already gone


def test_makedirs_reports_what_it_created_and_refuses_a_dangling_link(tree: Path, host: Path) -> None:
    assert Tree(tree).makedirs(Path("/a/b/c")) == [Path("/a"), Path("/a/b"), Path("/a/b/c")]
    (tree / "d").symlink_to(host / "missing")
    with pytest.raises(NotADirectoryError):
        Tree(tree).makedirs(Path("/d/x"))
    assert not (host / "missing").exists()


def test_created_entries_are_given_to_the_owner_without_following_links(tree: Path) -> None:
    me = (tree.stat().st_uid, tree.stat().st_gid)
    t = Tree(tree, owner=me)
    t.makedirs(Path("/home/u/.config"))
    t.write(Path("/home/u/.config/x"), b"x", 0o600)
    t.symlink("x", Path("/home/u/.config/y"))
    assert (tree / "home/u/.config/x").stat().st_mode & 0o777 == 0o600
    assert (tree / "home/u/.config/y").lstat().st_uid == me[0]


def test_every_error_names_the_path_not_a_descriptor_or_a_bare_name(tree: Path) -> None:
    """Calls on a descriptor (or relative to one) fail naming the fd's number, the last component or a
    temp file; each error must name where the target's path lies, which is what a message shows."""
    (tree / "real/dir/inside").mkdir(parents=True)
    (tree / "real/file").write_text("x\n")
    t = Tree(tree)
    failing = [
        ("real/dir", lambda: t.read(Path("/real/dir"))),  # os.fdopen of a directory named the fd: "4"
        ("real/dir", lambda: t.write(Path("/real/dir"), b"x", 0o644)),  # renameat named the temp file
        ("real/dir", lambda: t.rmdir(Path("/real/dir"))),  # not empty; os.rmdir named "dir"
        ("real/file", lambda: t.symlink("elsewhere", Path("/real/file"))),  # exists; named "file"
    ]
    for where, call in failing:
        with pytest.raises(OSError) as exc:
            call()
        assert exc.value.filename == str(tree / where), (where, exc.value)


def test_a_link_that_loops_inside_the_tree_is_missing_for_lookups_and_refused_for_writes(tree: Path) -> None:
    """A tree's etc -> /etc is, inside the tree, etc itself: lookups find nothing (not an error that stops
    --status), a write is refused, and nothing on the host is reached."""
    (tree / "etc").symlink_to("/etc")
    files = Tree(tree)
    assert files.read(Path("/etc/passwd")) is None and files.stat(Path("/etc")) is None
    assert files.lstat(Path("/etc/rc2.d/S01x")) is None and files.listdir(Path("/etc/rc2.d")) is None
    assert not files.is_dir(Path("/etc")) and files.unlink(Path("/etc/passwd")) is False
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        files.write(Path("/etc/x"), b"x", 0o644)


def test_a_lookup_that_a_link_out_of_the_tree_made_fail_is_explained(tree: Path, host: Path) -> None:
    (tree / "etc").mkdir()
    (tree / "etc/rc2.d").symlink_to(host)
    (tree / "etc/init.d").symlink_to("/real")  # absolute, but it works inside the tree: nothing to say
    (tree / "etc/up").symlink_to("../" * 20 + str(host).lstrip("/"))
    files = Tree(tree)
    with outside.noticing() as seen:
        assert files.listdir(Path("/etc/rc2.d")) is None
        assert files.read(Path("/etc/init.d/missing")) is None
        assert files.read(Path("/etc/up/secret")) is None
        assert files.read(Path("/etc/rc2.d/secret")) is None  # the same link: said once
    said = ("outside the tree; taken inside the tree (as its own boot takes it) it leads nowhere: nothing "
            "was found through it")
    assert seen == [
        f"{tree}/etc/rc2.d is a symbolic link to {host}, {said}",
        f"{tree}/etc/up is a symbolic link to {'../' * 20}{str(host).lstrip('/')}, {said}",
    ]
    assert files.read(Path("/etc/rc2.d/secret")) is None  # not noticing: nothing is collected, nothing fails
