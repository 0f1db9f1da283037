"""Throwaway Unix users for the security tests: created with useradd under unique names, removed afterwards
even when the test fails, and a way to run a command as one of them (setpriv: real, effective and saved
ids and the groups all become the user's)."""

from __future__ import annotations

import contextlib
import pwd
import subprocess
import uuid
from collections.abc import Iterator
from typing import NamedTuple


class User(NamedTuple):
    name: str
    uid: int
    gid: int

    def argv(self, *argv: str) -> list[str]:
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--", *argv]


@contextlib.contextmanager
def users(count: int) -> Iterator[list[User]]:
    made: list[str] = []
    try:
        for _ in range(count):
            name = f"tsx{uuid.uuid4().hex[:10]}"
            subprocess.run(["useradd", "--system", "--no-create-home", "--user-group",
                            "--shell", "/bin/sh", name], check=True)
            made.append(name)
        yield [User(n, pwd.getpwnam(n).pw_uid, pwd.getpwnam(n).pw_gid) for n in made]
    finally:
        for name in made:
            subprocess.run(["userdel", name], check=False, capture_output=True)
            subprocess.run(["groupdel", name], check=False, capture_output=True)
