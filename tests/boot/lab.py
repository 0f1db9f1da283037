"""The boot lab: cached Debian roots, wheels of the project, and per-test overlays to boot them from.

Roots are built once per machine (debootstrap, then one variant per init system installed with plain
chroot) and kept as plain directories under CACHE, keyed by a hash of their recipe, so they can be used
directly as overlayfs lower layers. Tests never boot a cached root itself: SysV shutdown remounts / read-only,
which on a plain directory would hit the filesystem it lives on. Every boot goes through an Overlay whose
upper dir is then an exact record of what the test created, changed or deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

CACHE = Path(os.environ.get("TASKSERVER_BOOTLAB_CACHE", "/var/cache/taskserver-bootlab"))
# Overlay upper dirs need a filesystem with xattrs; /var/tmp is on disk where /tmp may be a small tmpfs.
SCRATCH = Path(os.environ.get("TASKSERVER_BOOTLAB_SCRATCH", "/var/tmp"))
SUITE = "bookworm"
RECIPE = "2"  # bump when the build steps below change, so cached roots are rebuilt
BASE_PACKAGES = ("python3", "python3-venv", "procps")
VARIANTS: dict[str, tuple[str, ...]] = {
    # libpam-systemd gives lingering users a user manager; cron is there for the cron backend.
    "systemd": ("systemd", "systemd-sysv", "dbus", "libpam-systemd", "cron"),
    "sysv": ("sysvinit-core", "sysv-rc", "insserv", "initscripts", "cron"),
}
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CLEAN_ENV = {"PATH": CLEAN_PATH, "LANG": "C.UTF-8", "HOME": "/root", "DEBIAN_FRONTEND": "noninteractive"}
VENV = "/opt/taskserver"
Roots = Callable[[str], list[Path]]  # fixture type: variant name -> overlay lower layers


class LabError(RuntimeError):
    """A lab step failed; the message carries the command and the tail of its output."""


def run(argv: Sequence[str], log: Path | None = None, timeout: float = 900,
        env: dict[str, str] | None = None) -> None:
    """Run a build step on the host; on failure raise with the quoted command and its last output lines."""
    out = subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=timeout, env=CLEAN_ENV if env is None else env, check=False)
    if log is not None:
        with log.open("a") as f:
            f.write(f"+ {' '.join(argv)}\n{out.stdout}{out.stderr}")
    if out.returncode != 0:
        tail = "\n".join((out.stdout + out.stderr).splitlines()[-25:])
        raise LabError(f"{' '.join(argv)!r} exited {out.returncode}:\n{tail}")


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """Serialize builds between concurrent test sessions on this machine."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f"{name}.lock").open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def _publish(tmp: Path, dest: Path) -> Path:
    """Make a finished build visible in one rename, so a half-built root is never used."""
    tmp.rename(dest)
    return dest


def _fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _clean_apt(root: Path) -> None:
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()


def base_root() -> Path:
    """Debian minbase with python3 and venv: the lower layer under every variant."""
    dest = CACHE / "roots" / f"base-{_key(RECIPE, SUITE, BASE_PACKAGES)}"
    with locked("roots"):
        if dest.is_dir():
            return dest
        tmp = _fresh(dest.with_name(dest.name + ".tmp"))
        log = CACHE / "roots" / "base.log"
        log.write_text("")
        mirror = os.environ.get("TASKSERVER_BOOTLAB_MIRROR")
        run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, str(tmp),
             *([mirror] if mirror else [])], log=log)
        _clean_apt(tmp)
        return _publish(tmp, dest)


def variant_root(name: str) -> Path:
    """The base plus one init system, as a plain directory (use it only as an overlay lower layer)."""
    packages = VARIANTS[name]
    base = base_root()
    dest = CACHE / "roots" / f"{name}-{_key(RECIPE, SUITE, BASE_PACKAGES, packages)}"
    with locked("roots"):
        if dest.is_dir():
            return dest
        tmp = dest.with_name(dest.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        log = CACHE / "roots" / f"{name}.log"
        log.write_text("")
        run(["cp", "-a", str(base), str(tmp)])
        # Package scripts must not start daemons inside a chroot on the host (cron would keep running).
        policy = tmp / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        # systemd's package scripts (systemd-tmpfiles) need /proc; nothing else is mounted.
        run(["mount", "-t", "proc", "proc", str(tmp / "proc")])
        try:
            run(["chroot", str(tmp), "apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
                log=log)
        finally:
            run(["umount", str(tmp / "proc")])
        policy.unlink()
        _clean_apt(tmp)
        (tmp / "etc/hostname").write_text(f"{name}\n")
        return _publish(tmp, dest)


# --- wheels -----------------------------------------------------------------------------------------------

SOURCE_DIRS = ("taskserver", "runtime", "installer", "templates")
SOURCE_FILES = ("pyproject.toml", "README.md", "setup.py", "setup.cfg", "MANIFEST.in", "LICENSE")


def _source_paths(repo: Path) -> list[Path]:
    paths = [repo / f for f in SOURCE_FILES if (repo / f).is_file()]
    for d in SOURCE_DIRS:
        for dirpath, dirnames, filenames in os.walk(repo / d):
            dirnames[:] = sorted(n for n in dirnames if n != "__pycache__")
            paths += [Path(dirpath) / f for f in sorted(filenames) if not f.endswith(".pyc")]
    return paths


def _tree_hash(repo: Path, paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        rel = str(p.relative_to(repo))
        h.update(rel.encode() + b"\0")
        h.update(os.readlink(p).encode() if p.is_symlink() else p.read_bytes())
    return h.hexdigest()[:16]


# the extras whose dependencies the wheel sets hold: [systemd] for the venv layers, [web] for the package
# taskserver-web that packaging/build.sh makes from packaging/extras
WHEEL_EXTRAS = "systemd,web"


def _pip_wheel(src: Path, out: Path, *, deps: bool) -> None:
    argv = [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "-w", str(out)]
    env = {**os.environ, "PIP_NO_INPUT": "1"}
    run([*argv, *([] if deps else ["--no-deps"]), f"{src}[{WHEEL_EXTRAS}]"], env=env)


def wheels(repo: Path) -> Path:
    """A directory with wheels of the project (as its sources are now) and every dependency, WHEEL_EXTRAS too.

    Dependencies (pystemd builds from its sdist, ~25 s) are cached by the pyproject hash; the project wheel
    by a hash of its sources. The build runs on a copy of the tree so concurrent sessions do not share
    setuptools' build/ and egg-info directories.
    """
    dep_key = _key(_tree_hash(repo, [repo / "pyproject.toml"]), WHEEL_EXTRAS)
    src_key = _tree_hash(repo, _source_paths(repo))
    root = CACHE / "wheels"
    dest = root / f"set-{src_key}-{dep_key}"
    with locked("wheels"):
        if dest.is_dir():
            os.utime(dest)  # last use, for prune_cache()
            return dest
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root) as scratch:
            src = Path(scratch) / "src"
            src.mkdir()
            for name in (*SOURCE_FILES, *SOURCE_DIRS):
                if (repo / name).is_dir():
                    shutil.copytree(repo / name, src / name, symlinks=True,
                                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                elif (repo / name).is_file():
                    shutil.copy2(repo / name, src / name)
            deps = root / f"deps-{dep_key}"
            if not deps.is_dir():
                tmp = _fresh(Path(scratch) / "deps")
                _pip_wheel(src, tmp, deps=True)
                for w in tmp.glob("taskserver-*.whl"):
                    w.unlink()
                _publish(tmp, deps)
            tmp = _fresh(Path(scratch) / "set")
            _pip_wheel(src, tmp, deps=False)
            for w in deps.glob("*.whl"):
                os.link(w, tmp / w.name)
            return _publish(tmp, dest)


# --- packages ---------------------------------------------------------------------------------------------

PACKAGE_VERSIONS = ("0.1.0-1", "0.1.0-2", "0.1.0-3")


def packages(repo: Path, wheel_dir: Path) -> Path:
    """The .deb and .rpm of each PACKAGE_VERSIONS, built by packaging/build.sh from wheel_dir, cached by the
    wheel set and the packaging sources (an edit of build.sh or the spec builds them anew)."""
    sources = [p for p in sorted((repo / "packaging").rglob("*")) if p.is_file() and "out" not in p.parts]
    dest = CACHE / "packages" / f"{wheel_dir.name}-{_tree_hash(repo, sources)}"
    with locked("packages"):
        if not dest.is_dir():
            tmp = _fresh(dest.with_name(dest.name + ".tmp"))
            for version in PACKAGE_VERSIONS:
                run(["bash", str(repo / "packaging/build.sh"), "--version", version, "--out", str(tmp),
                     "--wheels", str(wheel_dir), "all"], env={**CLEAN_ENV, "PIP_NO_INPUT": "1"})
            _publish(tmp, dest)
        os.utime(dest)  # last use, for prune_cache()
    return dest


# --- derived layers ---------------------------------------------------------------------------------------


def derived_layer(name: str, lowers: Sequence[Path], key: str, build: Callable[[Path], None]) -> list[Path]:
    """A cached overlay upper dir holding what build(merged_root) changed on top of lowers.

    Returns the full lower stack (the new layer first) for Overlay. Lets costly per-session setup (a venv
    with the project installed) be done once per wheel set instead of once per test.
    """
    dest = CACHE / "layers" / f"{name}-{_key(RECIPE, [str(p) for p in lowers], key)}"
    with locked("layers"):
        if not dest.is_dir():
            dest.parent.mkdir(parents=True, exist_ok=True)
            ov = Overlay(lowers, tag=f"layer-{name}")
            try:
                build(ov.root)
                ov.unmount()
                ov.upper.rename(dest)
            finally:
                ov.cleanup()
        os.utime(dest)  # last use, for prune_cache()
    return [dest, *lowers]


def venv_layer(variant: str, wheel_dir: Path) -> list[Path]:
    """The variant with the project pip-installed into /opt/taskserver, as a user would do it."""
    lowers = [variant_root(variant)]

    def build(root: Path) -> None:
        tmp = root / "tmp/wheels"
        shutil.copytree(wheel_dir, tmp)
        try:
            run(["chroot", str(root), "python3", "-m", "venv", VENV])
            run(["chroot", str(root), f"{VENV}/bin/pip", "install", "-q", "--disable-pip-version-check",
                 "--no-index", "--find-links", "/tmp/wheels", "taskserver[systemd]"])
        finally:
            shutil.rmtree(tmp)
            shutil.rmtree(root / "root/.cache", ignore_errors=True)

    return derived_layer(f"{variant}+venv", lowers, wheel_dir.name, build)


# --- overlays ---------------------------------------------------------------------------------------------


def mounts() -> dict[str, str]:
    """Mount point -> filesystem type, from this process's mount table."""
    table: dict[str, str] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" ")
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        table[point] = fields[fields.index("-") + 1]
    return table


class Overlay:
    """lowers (read-only) + a private upper dir, mounted at .root. Always cleanup() (fixtures do)."""

    def __init__(self, lowers: Sequence[Path], tag: str = "test") -> None:
        self.lowers = [Path(p) for p in lowers]
        SCRATCH.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=f"taskserver-bootlab-{os.getpid()}-{tag}-", dir=SCRATCH))
        self.upper, self.work, self.root = self.dir / "upper", self.dir / "work", self.dir / "merged"
        for d in (self.upper, self.work, self.root):
            d.mkdir()
        self.mount()

    @property
    def mounted(self) -> bool:
        return mounts().get(str(self.root)) == "overlay"

    def mount(self) -> None:
        lower = ":".join(str(p) for p in self.lowers)
        run(["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={lower},upperdir={self.upper},workdir={self.work}", str(self.root)])

    def unmount(self) -> None:
        if not self.mounted:
            return
        try:
            run(["umount", str(self.root)], timeout=30)
        except (LabError, subprocess.TimeoutExpired):
            run(["umount", "-l", str(self.root)], timeout=30)

    def remount(self) -> None:
        """A fresh mount after a boot: SysV shutdown leaves the overlay's superblock read-only."""
        self.unmount()
        self.mount()

    def cleanup(self) -> None:
        self.unmount()
        if not self.mounted:  # never rmtree through a mounted root
            shutil.rmtree(self.dir, ignore_errors=True)


def _kill_containers_on(root: Path) -> None:
    """SIGKILL a container left running on root (its nspawn outlives a killed session, in its own session).

    Killing the container's PID 1 ends its whole PID namespace; then nspawn exits by itself.
    """
    for entry in os.listdir("/proc"):
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not entry.isdigit() or not argv[0].endswith(b"systemd-nspawn") or str(root).encode() not in argv:
            continue
        for child in os.listdir("/proc"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(f"/proc/{child}/stat").read_text()
                if child.isdigit() and int(stat.rsplit(")", 1)[1].split()[1]) == int(entry):
                    os.kill(int(child), 9)
        with contextlib.suppress(OSError):
            os.kill(int(entry), 9)


def cleanup_stale() -> None:
    """Unmount and remove overlays left behind by test sessions that were killed."""
    for d in SCRATCH.glob("taskserver-bootlab-*"):
        pid = d.name.split("-")[2]
        if pid.isdigit() and Path(f"/proc/{pid}").exists():
            continue
        merged = d / "merged"
        _kill_containers_on(merged)
        if mounts().get(str(merged)) == "overlay":
            subprocess.run(["umount", "-l", str(merged)], check=False)
        if mounts().get(str(merged)) is None:
            shutil.rmtree(d, ignore_errors=True)


def prune_cache(max_age_hours: float = 12) -> None:
    """Drop wheel sets, packages and derived layers of old source trees (each edit makes new ones).

    Roots and dependency wheels are kept: their keys change only with the recipe. A layer still used as
    a lower dir by any mount is never removed.
    """
    in_use = Path("/proc/self/mountinfo").read_text()
    cutoff = time.time() - max_age_hours * 3600
    with locked("layers"), locked("wheels"), locked("packages"):
        for d in [*CACHE.glob("layers/*"), *CACHE.glob("wheels/set-*"), *CACHE.glob("packages/*")]:
            if d.is_dir() and d.stat().st_mtime < cutoff and str(d) not in in_use:
                shutil.rmtree(d, ignore_errors=True)


# --- what a test left behind -------------------------------------------------------------------------------


def _lower(overlay: Overlay, path: str) -> Path | None:
    for low in overlay.lowers:
        if os.path.lexists(low / path.lstrip("/")):
            return low / path.lstrip("/")
    return None


def _same(a: Path, b: Path) -> bool:
    """Same type, owner, mode and content: rewritten with what was there is not a change."""
    sa, sb = a.lstat(), b.lstat()
    if (sa.st_mode, sa.st_uid, sa.st_gid) != (sb.st_mode, sb.st_uid, sb.st_gid):
        return False
    if a.is_symlink():
        return os.readlink(a) == os.readlink(b)
    return a.is_file() and sa.st_size == sb.st_size and a.read_bytes() == b.read_bytes()


def upper_dir_files(overlay: Overlay) -> set[str]:
    """Every path the test created, changed or deleted (whiteouts), as absolute paths inside the root.

    Directories are listed only when they are new (absent from every lower layer): an existing directory
    appears in the upper dir merely because something inside it changed. A file rewritten with exactly the
    content, mode and owner it had below is not listed.
    """
    found: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(overlay.upper):
        rel = "/" + os.path.relpath(dirpath, overlay.upper)
        for d in dirnames:
            path = os.path.normpath(f"{rel}/{d}")
            if _lower(overlay, path) is None:
                found.add(path)
        for f in filenames:
            path = os.path.normpath(f"{rel}/{f}")
            low = _lower(overlay, path)
            if low is None or not _same(Path(dirpath) / f, low):
                found.add(path)
    return found


# What the init systems themselves write while booting and shutting down; never applies to our names.
INIT_CHURN = re.compile(
    r"^/(var/log|var/lib/systemd|var/cache|var/lib/dbus|var/lib/private|var/lib/sudo|run|tmp|var/tmp"
    r"|var/lib/initscripts|var/lib/urandom|var/lib/dpkg|var/lib/apt|etc/ld\.so\.cache)(/|$)"
    r"|^/etc/(machine-id|hostname|resolv\.conf|mtab|adjtime|\.pwd\.lock|localtime|timezone)$"
    r"|^/(proc|sys|dev|root|wheels)$|^/root/\.(bash_history|lesshst|cache)(/|$)"
)


def leftovers(overlay: Overlay, name: str = "taskserver") -> set[str]:
    """upper_dir_files() minus the init system's own churn; any path mentioning name always counts."""
    return {p for p in upper_dir_files(overlay) if name in p or not INIT_CHURN.search(p)}


RC_LINK = re.compile(r"^/etc/rc[0-6S]\.d/([SK])[0-9]{2}(.+)$")
INSSERV_DEPEND = re.compile(r"^/etc/init\.d/\.depend\.(boot|start|stop)$")


def rc_sequence(etc: Path) -> set[tuple[str, str, str]]:
    """What each runlevel starts and stops, without the order numbers: (rc dir, S|K, service)."""
    seq = set()
    for d in etc.glob("rc?.d"):
        for link in d.iterdir():
            if m := RC_LINK.match(f"/etc/{d.name}/{link.name}"):
                seq.add((d.name, m.group(1), m.group(2)))
    return seq


def sysv_registrar_churn(overlay: Overlay, name: str = "taskserver") -> set[str]:
    """Paths the SysV registrar rewrote for other services, checked to be harmless before they are excused.

    Debian's `update-rc.d NAME remove` (like `insserv -r`) leaves the other services' links renumbered
    (K01sendsigs -> K02sendsigs stays after our K01 link is gone) and rewrites insserv's .depend files:
    that is the registrar's normal behaviour on any package removal. Excused only if every runlevel still
    starts and stops exactly the services it did before, and no .depend file mentions us. Use after poweroff.
    """
    root, lower = overlay.root, overlay.lowers[-1]
    now, before = rc_sequence(root / "etc"), rc_sequence(lower / "etc")
    assert now == before, f"boot sequence changed: added {sorted(now - before)}, lost {sorted(before - now)}"
    churn = set()
    for p in upper_dir_files(overlay):
        link = RC_LINK.match(p)
        if link and link.group(2) != name:
            churn.add(p)
        elif INSSERV_DEPEND.match(p):
            assert name not in (root / p.lstrip("/")).read_text(), p
            churn.add(p)
    return churn
