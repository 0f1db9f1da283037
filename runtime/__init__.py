"""The task server daemon: config, schedule, store, executor, daemon control and the ``taskserver`` CLI."""
