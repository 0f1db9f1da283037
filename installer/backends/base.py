"""The contract every init-system backend implements, and the registry that finds them by name.

A backend turns a ``ServiceSpec`` into a ``Plan`` (files to write + steps to run) and knows how to enable,
disable, start, stop and query its service. It never writes files itself: ``installer.apply`` does that
atomically and records the manifest. Each step is an ``Action`` — a description shown to the operator (the
quoted argv, or the D-Bus call) and the callable that performs it — so ``--dry-run`` can print exactly what
would run.

``live`` says whether the backend's init system runs *here* and now (``Detection.live`` and no ``--root``).
When it is false the backend is **offline**: it plans only files and enable-links (``systemctl --root``,
``update-rc.d`` inside the tree...), returns no start/stop steps, and ``is_active`` returns ``None``.

This module is also the one registry of init systems. Each backend class declares its ``name``, where it
stands in the detection order (``detect_order``), how to tell that its init system runs (``running``) or is
installed (``installed``), its registrars and its ``Capabilities``. The CLI's ``--init`` choices, detection,
the golden and checker tests and the boot-test matrix all read the registry (``names()``, ``ordered()``);
nothing outside the backends asks for a backend by name. Adding an init system = one module in this package
defining a ``Backend`` subclass (registered by ``__init_subclass__``) + a ``templates/<name>/`` folder + one
boot-test entry; nothing else changes.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ...runtime.errors import UserError
from .. import proc
from ..manifest import fs
from ..spec import ServiceSpec

if TYPE_CHECKING:
    from ..detect import Detection, Facts

Found = tuple[str, str | None] | None  # a running init system (name, registrar), from a detection probe


@dataclass(frozen=True)
class FileSpec:
    """A file to install: ``path`` as the target system sees it (apply prefixes ``spec.root``)."""

    path: Path
    content: str
    mode: int = 0o644


@dataclass(frozen=True)
class Action:
    """One step that changes (or queries) the system. ``describe`` is what the operator is shown."""

    describe: str
    run: Callable[[], object]

    def __call__(self) -> object:
        return self.run()


def cmd(argv: Sequence[str], *, check: bool = True, input: str | None = None) -> Action:
    """An Action that runs ``argv`` through ``proc.run`` (never a shell)."""
    args = [str(a) for a in argv]
    return Action(proc.quote(args), lambda: proc.run(args, check=check, input=input))


@dataclass(frozen=True)
class Plan:
    """What an install (or uninstall) does, in order: files, then reload, enable, start."""

    backend: str
    files: tuple[FileSpec, ...] = ()
    reload: tuple[Action, ...] = ()  # after files changed (daemon-reload, initctl reload-configuration)
    enable: tuple[Action, ...] = ()
    start: tuple[Action, ...] = ()
    notes: tuple[str, ...] = ()  # warnings/information for the operator (e.g. linger is off)
    extra: dict[str, Any] = field(default_factory=dict)  # backend data kept in the manifest (cron line)


@dataclass(frozen=True)
class Registered:
    """One way the registration outside the manifest's files (an enable link, the crontab entry) is not what
    the install made, as ``--status`` reports it."""

    what: str  # the link or entry it concerns
    state: str  # "changed": an admin's now (edited, or pointed elsewhere) | "missing": recorded, not there
    why: str  # what the operator is told


@dataclass(frozen=True)
class Capabilities:
    """What an init system can do; the CLI, apply and the tests branch on these, never on a name."""

    user_scope: bool = False  # --user: a per-user service manager (systemd --user)
    supervision: bool = False  # restarts the daemon when it exits (Restart=always, respawn, runsv)
    live_start: bool = True  # can start the service now; cron cannot (its entry fires within the minute)
    run_as_by_daemon: bool = False  # the init starts the daemon as root and it drops to the config's run_as
    own_account: bool = False  # a caller without root installs into their own account (a crontab)
    offline_root: bool = True  # can write into a --root tree (image build) for the next boot
    presets: bool = False  # has presets that decide enablement on a first package install (systemctl preset)


class Backend(ABC):
    """One init system. Subclasses set ``name`` and implement the abstract methods."""

    name: ClassVar[str] = ""
    detect_order: ClassVar[int] = 50  # lower is probed first; the least specific (SysV) comes last
    registrars: ClassVar[tuple[str, ...]] = ()  # tools that register a boot file, in order of preference
    caps: ClassVar[Capabilities] = Capabilities()
    registry: ClassVar[dict[str, type[Backend]]] = {}
    unlisted: ClassVar[dict[str, type[Backend]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # only this package's modules are init systems; a Backend written elsewhere (a test's) is found by
        # name (a manifest may name it) but never listed, detected or offered by the CLI
        if cls.name and cls.__module__.rpartition(".")[0] == __name__.rpartition(".")[0]:
            Backend.registry[cls.name] = cls
        elif cls.name:
            Backend.unlisted[cls.name] = cls

    def __init__(self, *, live: bool, registrar: str | None = None) -> None:
        self.live = live  # the init system runs here and now; else only files + enable links
        self.registrar = registrar  # e.g. "update-rc.d" / "insserv" / "chkconfig" for SysV

    # --- detection (the registry's probes; ``installer.detect`` runs them in ``detect_order``) ---------
    @classmethod
    def running(cls, facts: Facts) -> Found:
        """(init, registrar) when this init system runs as PID 1 of ``facts.root``; else None."""
        return None

    @classmethod
    def installed(cls, facts: Facts) -> bool:
        """Whether this init system is installed in ``facts.root`` (for offline installs)."""
        return False

    @classmethod
    def find_registrar(cls, facts: Facts) -> str | None:
        """The registrar to use in ``facts.root`` when detection did not name one."""
        return cls.registrars[0] if cls.registrars else None

    @classmethod
    def live_here(cls, det: Detection, root: Path, user_scope: bool) -> bool:
        """Whether services can be started now: this init runs here and we install into the running system."""
        return det.live and det.init == cls.name and root == Path("/")

    # --- planning -------------------------------------------------------------------------------------
    def prepare(self, spec: ServiceSpec) -> ServiceSpec:
        """Check ``spec`` against what this init system can carry, or complete it; return the spec to use."""
        return spec

    def state_dir(self, spec: ServiceSpec) -> Path:
        """The daemon's default state directory under this boot file (systemd's StateDirectory=NAME)."""
        return Path("/var/lib") / spec.name

    def logs(self, spec: ServiceSpec) -> list[Path]:
        """Log files or directories this boot file makes the init system write (purged with --purge)."""
        return []

    def data_paths(self, spec: ServiceSpec) -> list[tuple[Path, str]]:
        """What the service writes besides its boot files (kept by uninstall, removed by --purge)."""
        # the pid file's place (/run/taskserver...) is shared with other servers and is a tmpfs: not listed
        return [(self.state_dir(spec), "state"), *((p, "log") for p in self.logs(spec))]

    def preset(self, spec: ServiceSpec) -> list[Action]:
        """Enable or not as the init system's presets say (``caps.presets``)."""
        return []

    @abstractmethod
    def files(self, spec: ServiceSpec) -> list[FileSpec]:
        """Render the boot files for ``spec`` (templates with strict quoting filters)."""

    def rendered(self, spec: ServiceSpec) -> list[FileSpec]:
        """Every text this backend renders for ``spec`` (golden files and checkers): its boot files, or
        what it registers elsewhere (cron: the crontab entry)."""
        return self.files(spec)

    def plan_install(self, spec: ServiceSpec, *, enable: bool = True, start: bool = True) -> Plan:
        """Files, then reload; enable links unless ``enable`` is false; start only when live and asked."""
        return Plan(
            backend=self.name,
            files=tuple(self.files(spec)),
            reload=tuple(self.reload(spec)),
            enable=tuple(self.enable(spec)) if enable else (),
            start=tuple(self.start(spec)) if start and self.live and self.caps.live_start else (),
            notes=tuple(self.notes(spec)),
        )

    def plan_uninstall(self, spec: ServiceSpec, manifest: dict[str, Any]) -> Plan:
        """Steps before the manifest's files are removed: stop (when live) and disable."""
        return Plan(
            backend=self.name,
            start=tuple(self.stop(spec)) if self.live else (),
            enable=tuple(self.disable(spec)),
        )

    def notes(self, spec: ServiceSpec) -> list[str]:
        return []

    # --- what is the service's own --------------------------------------------------------------------
    def own_dirs(self, spec: ServiceSpec) -> list[Path]:
        """Directories that are this service's alone, made by the install to hold its files (runit's
        /etc/sv/NAME and its log/). A symbolic link in place of one is an admin's: install refuses to write
        through it, uninstall leaves the service alone."""
        return []

    def keep_registration(self, spec: ServiceSpec, reverse: Callable[[], None]) -> Callable[[], None]:
        """The undo of a registering step (enable, or disable), made before the step runs, for a rollback:
        ``reverse`` runs the reverse steps (``disable`` removes what ``enable`` made). A backend whose
        registration is text it edits (a crontab, an override an admin may have written) returns a copy's
        restore instead; one whose reverse steps leave something the step made adds its removal."""
        return reverse

    def in_the_way(self, spec: ServiceSpec) -> list[str]:
        """What holds the place where registering goes, an admin's, that registering would delete or replace
        and boot runs instead of the service (SysV's file ``S20NAME``, runit's ``/etc/service/NAME`` leading
        to another directory): an install that would register refuses, before it writes anything. One
        phrase each; [] when registering may go ahead."""
        return []

    def changed_by_hand(self, spec: ServiceSpec, manifest: dict[str, Any]) -> list[str]:
        """How the registration itself (what is not a file of the manifest: a crontab entry) differs from
        what the install made; uninstall leaves a registration an admin changed alone."""
        return []

    def registration_state(self, spec: ServiceSpec, manifest: dict[str, Any]) -> list[Registered]:
        """How the registration outside the manifest's files stands against what the install made, for
        ``--status``: each way it is an admin's now or missing; [] when it is as made (or switched off by
        the init system's own disable, which ``enabled`` shows)."""
        return [Registered(spec.name, "changed", why) for why in self.changed_by_hand(spec, manifest)]

    def _foreign_link(self, spec: ServiceSpec, link: Path, target: Path) -> list[Registered]:
        """The enable link at ``link`` when it leads somewhere other than ``target``: an admin's."""
        found = fs(spec).readlink(link)
        if found is None or links_to(found, link, target):
            return []
        return [Registered(str(link), "changed", f"{link} is a symbolic link to {found}, not to {target}: "
                           "the admin's now (not this install's registration)")]

    # --- steps (each returns the Actions to run, in order; offline backends return no live steps) ----
    @abstractmethod
    def reload(self, spec: ServiceSpec) -> list[Action]:
        """Make the init system see changed files (``systemctl daemon-reload``); [] offline."""

    def after_remove(self, spec: ServiceSpec) -> list[Action]:
        """Run once our files are gone (uninstall, rollback of a first install); default: ``reload``."""
        return self.reload(spec)

    @abstractmethod
    def enable(self, spec: ServiceSpec) -> list[Action]:
        """Start at boot (enable links / rc links / job file / crontab entry)."""

    @abstractmethod
    def disable(self, spec: ServiceSpec) -> list[Action]:
        """Do not start at boot; the reverse of ``enable``."""

    @abstractmethod
    def start(self, spec: ServiceSpec) -> list[Action]: ...

    @abstractmethod
    def stop(self, spec: ServiceSpec) -> list[Action]: ...

    def restart(self, spec: ServiceSpec) -> list[Action]:
        return [*self.stop(spec), *self.start(spec)]

    # --- queries ----------------------------------------------------------------------------------------
    @abstractmethod
    def is_enabled(self, spec: ServiceSpec) -> bool:
        """Whether the service starts at boot (works offline too: it reads links/files under spec.root)."""

    @abstractmethod
    def is_active(self, spec: ServiceSpec) -> bool | None:
        """Whether it runs now; ``None`` when that cannot be known (offline)."""


def links_to(link: str | None, where: Path, target: Path) -> bool:
    """Whether ``link`` (the symbolic link found at ``where``, as the target names it) names ``target``,
    absolute or relative: an enable link the install made, not one an admin pointed elsewhere."""
    return link is not None and Path(os.path.normpath(where.parent / link)) == target


def instance_dir(base: Path, spec: ServiceSpec) -> Path:
    """The daemon's default state dir under ``base``: a config other than the default gets its own subdir
    there (``runtime.config.instance_name``), so several services can share ``base``."""
    from ...runtime.config import instance_name  # noqa: PLC0415 - the runtime's own rule, loaded on use

    name = instance_name(spec.config)
    return base if name == "taskserver" else base / name


def load_all() -> None:
    """Import every backend module so each registers itself."""
    package = __name__.rsplit(".", 1)[0]
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name != "base":
            importlib.import_module(f"{package}.{info.name}")


def ordered() -> list[type[Backend]]:
    """Every registered backend in detection order (the first whose init system runs wins)."""
    load_all()
    return sorted(Backend.registry.values(), key=lambda cls: (cls.detect_order, cls.name))


def names() -> list[str]:
    """The names ``--init`` accepts, in detection order."""
    return [cls.name for cls in ordered()]


def get(name: str) -> type[Backend]:
    """The backend class for ``name``; UserError (exit 2) with the known names otherwise."""
    load_all()
    try:
        return Backend.registry.get(name) or Backend.unlisted[name]
    except KeyError:
        known = ", ".join(names())
        raise UserError(f"unknown init system {name!r}", hint=f"use --init with one of: {known}") from None
