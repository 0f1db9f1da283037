"""The contract every init-system backend implements, and the registry that finds them by name.

A backend turns a ``ServiceSpec`` into a ``Plan`` (files to write + steps to run) and knows how to enable,
disable, start, stop and query its service. It never writes files itself: ``installer.apply`` does that
atomically and records the manifest. Each step is an ``Action`` — a description shown to the operator (the
quoted argv, or the D-Bus call) and the callable that performs it — so ``--dry-run`` can print exactly what
would run.

``live`` says whether the backend's init system runs *here* and now (``Detection.live`` and no ``--root``).
When it is false the backend is **offline**: it plans only files and enable-links (``systemctl --root``,
``update-rc.d`` inside the tree...), returns no start/stop steps, and ``is_active`` returns ``None``.

Adding an init system = one module in this package defining a ``Backend`` subclass with ``name = "..."``
(registered by ``__init_subclass__``) + a ``templates/<name>/`` folder; nothing else changes.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ...runtime.errors import UserError
from .. import proc
from ..spec import ServiceSpec


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


class Backend(ABC):
    """One init system. Subclasses set ``name`` and implement the abstract methods."""

    name: ClassVar[str] = ""
    supports_user_scope: ClassVar[bool] = False
    registry: ClassVar[dict[str, type[Backend]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            Backend.registry[cls.name] = cls

    def __init__(self, *, live: bool, registrar: str | None = None) -> None:
        self.live = live  # the init system runs here and now; else only files + enable links
        self.registrar = registrar  # e.g. "update-rc.d" / "insserv" / "chkconfig" for SysV

    # --- planning -------------------------------------------------------------------------------------
    @abstractmethod
    def files(self, spec: ServiceSpec) -> list[FileSpec]:
        """Render the boot files for ``spec`` (templates with strict quoting filters)."""

    def plan_install(self, spec: ServiceSpec, *, enable: bool = True, start: bool = True) -> Plan:
        """Files, then reload; enable links unless ``enable`` is false; start only when live and asked."""
        return Plan(
            backend=self.name,
            files=tuple(self.files(spec)),
            reload=tuple(self.reload(spec)),
            enable=tuple(self.enable(spec)) if enable else (),
            start=tuple(self.start(spec)) if start and self.live else (),
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


def load_all() -> None:
    """Import every backend module so each registers itself."""
    package = __name__.rsplit(".", 1)[0]
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name != "base":
            importlib.import_module(f"{package}.{info.name}")


def get(name: str) -> type[Backend]:
    """The backend class for ``name``; UserError (exit 2) with the known names otherwise."""
    load_all()
    try:
        return Backend.registry[name]
    except KeyError:
        known = ", ".join(sorted(Backend.registry))
        raise UserError(f"unknown init system {name!r}", hint=f"use --init with one of: {known}") from None
