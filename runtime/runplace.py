"""What every run of one tenant shares, worked out once per configuration instead of once per run.

At hundreds of runs per second the daemon's own work per run is what bounds a burst, and most of it used to
be the same each time: finding the tenant in the config, its status directory, whom its files and runs
belong to (the root rule), the user's passwd entry, and the runs' environment.  ``Places`` keeps that
per tenant for the ``Config`` it was worked out from; a reload brings a new
``Config`` and so new places, so every rule is met exactly as before, with the same outcome: a refused
tenant is refused at each of its spawns, with the same message.

A run's environment is made once per tenant (``jobenv.build``, the same layers in the same order), with the
values that differ per run set in a copy: its job's name, its id and its status file.  Only a job with an
environment of its own (``environment:``, ``env_file:`` or ``inherit_env:`` on the job) keeps one of its own:
kept for every job, 10,000 jobs that each ran once held about 6 MB more (and the jobs' status file paths
another 3 MB), so a job's status file path is joined per run too.  The daemon's own environment
(``inherit_env:``) is read when a tenant or job first runs under a config: it does not change while the
daemon runs.
"""

from __future__ import annotations

import os

from . import jobenv, liveness, privs, statusfile, tenancy
from .errors import UserError
from .model import Config, EnvDef, JobDef, TenantDef
from .store import Run

JOB, RUN_ID, STATUS_FILE = "TASKSERVER_JOB", "TASKSERVER_RUN_ID", "TASKSERVER_STATUS_FILE"  # differ per run


class Place:
    """One tenant's runs under one config."""

    def __init__(self, config: Config, name: str, tenant: TenantDef | None, instance: str) -> None:
        self.name = name
        self.conf = tenant
        self.state_dir = config.tenant_dir(name)
        self.status_dir = str(statusfile.status_dir(self.state_dir, name))  # joined with a run id per run
        self.files = tenancy.file_identity(config, tenant) if tenant is not None else None
        self._config, self._instance = config, instance
        self._base: dict[str, str] | None = None  # the environment of a job without one of its own
        self._envs: dict[tuple[str, int], tuple[JobDef, dict[str, str]]] = {}  # jobs with their own
        self._who: tuple[privs.Identity | None, jobenv.RunUser] | UserError | None = None

    def status_path(self, run: Run) -> str:
        """``statusfile.path_of`` as a string."""
        if run.queued or not run.job:
            return f"{self.status_dir}/{run.id}"
        return f"{self.status_dir}/{statusfile.job_status_name(run.job)}"

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
        if jobdef is None or not _adds(jobdef.env):
            base = self._base
            if base is None:
                base = self._base = self._job_env("", None)
            env = base.copy()
            env[JOB] = job
        else:
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
        own = {liveness.TENANT_ENV: self.name, JOB: job, RUN_ID: "", STATUS_FILE: "",
               "TASKSERVER_LOGIN": (self.conf.login if self.conf else None) or "",
               "TASKSERVER_CONFIG": str(self._config.path.absolute()),
               liveness.INSTANCE_ENV: self._instance}  # a restarted daemon finds the run by these two
        return jobenv.build(who[1], self.conf, jobdef, own)


def _adds(env: EnvDef) -> bool:
    """The job adds to its tenant's environment."""
    return bool(env.environment or env.file_vars or env.inherit)


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
