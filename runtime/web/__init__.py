"""`taskserver web`: a dashboard, a JSON API with scoped tokens, Prometheus metrics and a health check.

It reads the tenants' stores through the store registry and writes only what the CLI could write (enqueue a
task, run a job now, cancel a queued run). It never runs inside the scheduler's loop: it is its own process.
Needs the optional extra ``taskserver[web]`` (Starlette, uvicorn, prometheus_client).
"""
