"""What a message may show of a PostgreSQL DSN (runtime/pgdsn.py): no part of its password, in any of the
forms libpq reads, also where libpq cannot read it."""

from __future__ import annotations

import pytest

from taskserver.runtime.pgdsn import redact, scrub


@pytest.mark.parametrize(("dsn", "said"), [
    ("postgresql://u:pw%zz-secret@h/db", 'invalid percent-encoded token: "pw%zz-secret"'),
    ("postgresql://u:p%40ss-word@h/db", "password p@ss-word refused"),  # as libpq decodes it
    ("postgres://u:pw@secret-2@h/db", "failed to resolve host 'secret-2@h'"),  # the @ read as the host's
    ("postgresql://u@h/db?sslmode=require&password=query-secret", "query-secret"),
    ("host=h password=kv-secret dbname=db", "kv-secret"),
    ("host=h password = 'it\\'s quoted' dbname=db", "it's quoted"),
])
def test_no_part_of_the_password_is_shown(dsn: str, said: str) -> None:
    assert "secret" not in scrub(said, dsn) and "quoted" not in scrub(said, dsn)
    assert "secret" not in redact(dsn) and "quoted" not in redact(dsn)


def test_the_rest_is_shown_as_it_is() -> None:
    dsn = "postgresql://taskserver@db.internal:5433/jobs"
    assert scrub("cannot connect to db.internal port 5433", dsn) == "cannot connect to db.internal port 5433"
    assert redact(dsn) == "user=taskserver dbname=jobs host=db.internal port=5433"
    assert redact("postgresql://u:pw%zz@h/db") == "the configured DSN"  # libpq cannot read it
