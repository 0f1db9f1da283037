"""What every run of one tenant shares, worked out once per configuration instead of once per run.

At hundreds of runs per second the daemon's own work per run is what bounds a burst, and most of it used to
be the same each time: finding the tenant in the config, its status directory, whom its files and runs
belong to (the root rule), the user's passwd entry, and a job's whole environment.  ``Places`` keeps that
per tenant (and the environment per job) for the ``Config`` it was worked out from; a reload brings a new
``Config`` and so new places, so every rule is met exactly as before, with the same outcome: a refused
tenant is refused at each of its spawns, with the same message.

A run's environment is its job's, made once (``jobenv.build``, the same layers in the same order), with the
two values that differ per run set in a copy: its id and its status file.  The daemon's own environment
(``inherit_env:``) is read when a job first runs under a config: it does not change while the daemon runs.
"""

from __future__ import annotations

import os

from . import jobenv, liveness, privs, statusfile, tenancy
from .errors import UserError
from .model import Config, JobDef, TenantDef
from .store import Run

RUN_ID, STATUS_FILE = "TASKSERVER_RUN_ID", "TASKSERVER_STATUS_FILE"  # the variables that differ per run


class Place:
    """One tenant's runs under one config."""

    def __init__(self, config: Config, name: str, tenant: TenantDef | None, instance: str) -> None:
        self.name = name
        self.conf = tenant
        self.state_dir = config.tenant_dir(name)
        self.status_dir = str(statusfile.status_dir(self.state_dir, name))  # joined with a run id per run
        self.files = tenancy.file_identity(config, tenant) if tenant is not None else None
        self._config, self._instance = config, instance
        self._job_paths: dict[str, str] = {}
        self._envs: dict[tuple[str, int], tuple[JobDef | None, dict[str, str]]] = {}
        self._who: tuple[privs.Identity | None, jobenv.RunUser] | UserError | None = None

    def status_path(self, run: Run) -> str:
        """``statusfile.path_of`` as a string, the job's worked out once."""
        if run.queued or not run.job:
            return f"{self.status_dir}/{run.id}"
        path = self._job_paths.get(run.job)
        if path is None:
            path = str(statusfile.job_status_path(self.state_dir, self.name, run.job))
            self._job_paths[run.job] = path
        return path

    def identity(self) -> privs.Identity | None:
        """Whom a run becomes: None for the daemon's own ids (no switch); raises UserError as
        ``privs.run_identity`` does (the root rule), at every call."""
        who = self._who
        if who is None:
            who = self._who = self._work_out_identity()
        if isinstance(who, UserError):
            raise who
        return who[0]

    def _work_out_identity(self) -> tuple[privs.Identity | None, jobenv.RunUser] | UserError:
        if self.conf is None:
            return UserError(f"tenant {self.name!r} is no longer in the config", hint="reload")
        try:
            ident = privs.run_identity(self._config, self.conf)
        except UserError as exc:
            return exc
        user = jobenv.RunUser.of_uid(ident.uid if ident is not None else os.geteuid())
        return (None if ident is None or ident.is_self else ident), user

    def environment(self, job: str, jobdef: JobDef | None, run_id: int, status: str) -> dict[str, str]:
        """The whole environment of one run (``identity`` first: it raises for a refused tenant)."""
        key = (job, id(jobdef))
        got = self._envs.get(key)
        if got is None or got[0] is not jobdef:
            got = self._envs[key] = (jobdef, self._job_env(job, jobdef))
        env = got[1].copy()
        env[RUN_ID] = str(run_id)
        env[STATUS_FILE] = status
        return env

    def _job_env(self, job: str, jobdef: JobDef | None) -> dict[str, str]:
        who = self._who
        assert who is not None and not isinstance(who, UserError), "identity() comes first"
        own = {"TASKSERVER_TENANT": self.name, "TASKSERVER_JOB": job, RUN_ID: "", STATUS_FILE: "",
               "TASKSERVER_LOGIN": (self.conf.login if self.conf else None) or "",
               "TASKSERVER_CONFIG": str(self._config.path.absolute()),
               liveness.INSTANCE_ENV: self._instance}  # a restarted daemon finds the run by these two
        return jobenv.build(who[1], self.conf, jobdef, own)


class Places:
    """The places of the current config's tenants, made when first asked for."""

    def __init__(self, instance: str) -> None:
        self._instance = instance
        self._config: Config | None = None
        self._places: dict[str, Place] = {}

    def __call__(self, config: Config, tenant: str) -> Place:
        if config is not self._config:
            self._config, self._places = config, {}
        place = self._places.get(tenant)
        if place is None:
            place = self._places[tenant] = Place(config, tenant, config.tenant(tenant), self._instance)
        return place
