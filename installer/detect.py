"""Which init system runs now (not which is installed), and the evidence for it.

Every fact is read under ``root`` — including PID 1's, from ``root/proc/1/...`` — so tests build fake roots
in a temporary directory. The probes belong to the backends (``Backend.running``, ``Backend.installed``)
and run in the registry's order, which follows what each init leaves behind while it runs: systemd's
``/run/systemd/system`` (sd_booted), upstart answering ``initctl version``, OpenRC's
``/run/openrc/softlevel``, runit as PID 1, and SysV ``init`` as PID 1 with ``/etc/init.d``. WSL's own
``/init`` and container entry points are no service manager: the result is then **offline**, and ``target``
names the init system that is *installed* (what to write files for, to be used at the next boot).

A ``--root`` tree is another system's files: it is always offline, its files are read inside it (its
symlinks taken as its own boot would take them), and nothing of it is run on the host — not even its
``initctl``. Tests read fake roots as if they were this machine's ``/`` with ``detect_as_host``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import stat
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import distro

from . import outside, proc
from .backends import base
from .backends.base import Found
from .safefs import Tree

BIN_DIRS = ("usr/sbin", "sbin", "usr/bin", "bin")
DEBIAN_LIKE = {"debian", "ubuntu", "devuan", "raspbian", "linuxmint"}
RHEL_LIKE = {"rhel", "centos", "fedora", "rocky", "almalinux", "ol", "scientific", "amzn"}
SUSE_LIKE = {"suse", "opensuse", "sles", "opensuse-leap", "opensuse-tumbleweed", "sled"}


@dataclass(frozen=True)
class Detection:
    init: str  # systemd | upstart | sysv | openrc | runit | offline — what runs now
    target: str | None  # what to install for: ``init`` when live, else the installed init system (or None)
    registrar: str | None  # pystemd | systemctl | initctl | update-rc.d | insserv | chkconfig | rc-update
    distro_id: str = ""
    distro_like: str = ""
    distro_version: str = ""
    container: str | None = None
    chroot: bool = False
    wsl: bool = False
    evidence: tuple[str, ...] = field(default_factory=tuple)

    @property
    def live(self) -> bool:
        return self.init != "offline"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["evidence"] = list(self.evidence)
        data["live"] = self.live
        return data


def _read(root: Path, rel: str) -> str | None:
    """A file of the target, resolved inside it (a tree's absolute symlink never reaches the host's file)."""
    try:
        data = Tree(root).read(Path("/") / rel)
    except OSError:
        return None
    return None if data is None else data.decode("utf-8", errors="replace")


def _stat(root: Path, rel: str) -> os.stat_result | None:
    try:
        return Tree(root).stat(Path("/") / rel)
    except OSError:
        return None


def _is_dir(root: Path, rel: str) -> bool:
    st = _stat(root, rel)
    return st is not None and stat.S_ISDIR(st.st_mode)


def is_dir(root: Path, rel: str) -> bool:
    """Whether ``rel`` is a directory of the target, resolved inside it (for the backends' probes)."""
    return _is_dir(root, rel)


def exists(root: Path, rel: str) -> bool:
    """Whether ``rel`` exists in the target, resolved inside it."""
    return _stat(root, rel) is not None


def which(root: Path, name: str) -> Path | None:
    """An executable ``name`` in the target's standard directories (not the caller's PATH); only looked at,
    resolved inside ``root``: a tree's binaries are never run on the host."""
    for d in BIN_DIRS:
        st = _stat(root, f"{d}/{name}")
        if st is not None and stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
            return root / d / name
    return None


def is_tree(root: Path) -> bool:
    """Another system's tree (``--root``), not the running one: always offline, only its files are read."""
    return root.resolve() != Path("/")


RELEASE_FILE = re.compile(r"^[\w.]+[-_](release|version)$")


def _distribution(root: Path) -> distro.LinuxDistribution:
    """``distro``'s facts about ``root``. For a tree, the release files are first read inside it into a
    private copy (``distro`` itself would follow the tree's symlinks on the host)."""
    if not is_tree(root):
        return distro.LinuxDistribution(include_lsb=False, include_uname=False)
    with tempfile.TemporaryDirectory(prefix="taskserver-detect-") as tmp:
        for rel in ["usr/lib/os-release", *(f"etc/{n}" for n in _etc_names(root) if RELEASE_FILE.match(n))]:
            text = _read(root, rel)
            if text is not None:
                (Path(tmp) / rel).parent.mkdir(parents=True, exist_ok=True)
                (Path(tmp) / rel).write_text(text, encoding="utf-8")
        dist = distro.LinuxDistribution(root_dir=tmp, include_lsb=False, include_uname=False)
        dist.info()  # read now, while the copy exists (the answers are cached)
        return dist


def _etc_names(root: Path) -> list[str]:
    try:
        fd = Tree(root).open_dir(Path("/etc"))
    except OSError:
        return []
    try:
        return sorted(os.listdir(fd))
    finally:
        os.close(fd)


def _family(did: str, like: str) -> str:
    ids = {did, *like.split()}
    if ids & SUSE_LIKE:
        return "suse"
    if ids & RHEL_LIKE:
        return "rhel"
    if ids & DEBIAN_LIKE:
        return "debian"
    return ""


def sysv_registrar(root: Path, did: str, like: str, ev: list[str]) -> str | None:
    """update-rc.d on Debian, insserv on SUSE (or when update-rc.d is missing), chkconfig on RHEL."""
    have = [r for r in ("update-rc.d", "insserv", "chkconfig") if which(root, r)]
    ev.append("SysV registrars present: " + (", ".join(have) or "none"))
    prefer = {"debian": ["update-rc.d", "insserv"], "suse": ["insserv", "chkconfig"], "rhel": ["chkconfig"]}
    fam = _family(did, like)
    for r in [*prefer.get(fam, []), "update-rc.d", "insserv", "chkconfig"]:
        if r in have:
            ev.append(f"registrar {r} (distribution family {fam or 'unknown'})")
            return r
    return None


def _container(root: Path, ev: list[str]) -> str | None:
    if _stat(root, ".dockerenv") is not None:
        ev.append("/.dockerenv exists: docker container")
        return "docker"
    if _stat(root, "run/.containerenv") is not None:
        ev.append("/run/.containerenv exists: podman container")
        return "podman"
    env = _read(root, "proc/1/environ") or ""
    for item in env.split("\0"):
        if item.startswith("container="):
            ev.append(f"PID 1 environment has {item}")
            return item.split("=", 1)[1] or "container"
    marker = (_read(root, "run/systemd/container") or "").strip()
    if marker:
        ev.append(f"/run/systemd/container says {marker}")
        return marker
    return None


def _chroot(root: Path, ev: list[str]) -> bool:
    """Only meaningful for the real root: is PID 1's / another directory than ours?"""
    if is_tree(root):
        return False
    if not os.path.exists("/proc/self"):
        # Every booted system (and container) has /proc mounted; a bare chroot of an image build often
        # has not. Called "not a chroot", a /run bind-mounted from the host could pass for a live init.
        # (/proc/self, not /proc/1: hidepid= or ProtectProc= hide PID 1 from a process on a live system.)
        ev.append("/proc is not mounted: not a booted system, treated as a chroot")
        return True
    try:
        a, b = os.stat("/proc/1/root"), os.stat("/")
    except OSError as exc:
        ev.append(f"cannot read /proc/1/root ({exc.strerror}): cannot tell whether this is a chroot")
        return False
    if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
        ev.append("/proc/1/root is not /: running in a chroot")
        return True
    return False


def _upstart_runs(root: Path, ev: list[str]) -> bool:
    initctl = which(root, "initctl")
    if initctl is None:
        return False
    res = proc.run([str(initctl), "version"], check=False, timeout=10)
    if res.ok and "upstart" in res.stdout:
        ev.append(f"{initctl.relative_to(root)} version: {res.stdout.strip()}")
        return True
    ev.append(f"{initctl.relative_to(root)} exists but `initctl version` does not answer as upstart")
    return False


def _installed(f: Facts) -> tuple[str | None, str | None]:
    """The init system installed in ``f.root`` (for offline installs) and its registrar."""
    for cls in base.ordered():
        if cls.installed(f):
            return cls.name, cls.find_registrar(f)
    return None, None


def detect(root: Path = Path("/")) -> Detection:
    """What runs on this machine (``root`` = ``/``), or what a tree has installed (any other ``root``: a tree
    is always offline; its files are only read, inside it, and nothing of it is run). A file of the tree not
    found because a link on its way leads out of the tree is named in the evidence."""
    with outside.noticing() as seen:
        det = _detect(root, as_host=not is_tree(root))
    return replace(det, evidence=(*det.evidence, *seen))


def detect_as_host(root: Path) -> Detection:
    """Tests only: read a fake root built by the test as if it were this machine's ``/`` — the live probes
    then run, among them the root's own ``initctl version``. Never for a tree someone else could write."""
    return _detect(root, as_host=True)


def _detect(root: Path, *, as_host: bool) -> Detection:
    ev: list[str] = []
    dist = _distribution(root)
    did, like, ver = dist.id(), dist.like(), dist.version()
    ev.append(f"distribution {did or 'unknown'} {ver} (like: {like or '-'}) from etc/os-release")
    comm = (_read(root, "proc/1/comm") or "").strip()
    ev.append(f"PID 1 is {comm!r}" if comm else "PID 1's name is unknown (no proc/1/comm)")
    version = _read(root, "proc/version") or ""
    wsl = "microsoft" in version.lower() or bool(os.environ.get("WSL_DISTRO_NAME") and root == Path("/"))
    if wsl:
        ev.append("WSL kernel (Microsoft in /proc/version)")
    container = _container(root, ev)
    chroot = _chroot(root, ev)
    common = {
        "distro_id": did,
        "distro_like": like,
        "distro_version": ver,
        "container": container,
        "chroot": chroot,
        "wsl": wsl,
    }

    if not as_host:
        ev.append(f"{root} is a tree (--root): always offline; its files are read, nothing in it is run")
    facts = Facts(root, comm, wsl, did, like, ev)
    running = None if chroot or not as_host else _running(facts)
    if running is not None:
        return Detection(running[0], running[0], running[1], evidence=tuple(ev), **common)  # type: ignore[arg-type]
    ev.append("no running init system found: offline (files and boot links only, nothing started)")
    target, reg = _installed(facts)
    return Detection("offline", target, reg, evidence=tuple(ev), **common)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Facts:
    """What the detection probes of the backends read (``Backend.running`` / ``installed``)."""

    root: Path
    comm: str  # PID 1's name
    wsl: bool
    did: str
    like: str
    ev: list[str]


def _running(f: Facts) -> Found:
    """The first backend, in the registry's detection order, whose init system runs (SysV is last)."""
    for cls in base.ordered():
        found = cls.running(f)
        if found is not None:
            return found
    return None


def upstart_on_rhel(f: Facts) -> bool:
    """RHEL/CentOS 6 boot with upstart 0.6, which predates setuid/respawn limits in job files and runs
    services from SysV rc scripts managed by chkconfig: install an init script there."""
    return _family(f.did, f.like) == "rhel" and which(f.root, "chkconfig") is not None


def upstart_runs(f: Facts) -> bool:
    return not f.wsl and f.comm in ("init", "upstart") and _upstart_runs(f.root, f.ev)


def systemd_registrar(ev: list[str]) -> str:
    if importlib.util.find_spec("pystemd") is None:
        ev.append("pystemd not importable: registering with systemctl")
        return "systemctl"
    ev.append("pystemd importable: registering over D-Bus")
    return "pystemd"
