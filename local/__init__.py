"""The local runtime: the whole system on one machine, driven by `python -m local` (`make run`).

A moto server (a child process) emulates AWS; the resources come from `infra/`; the Chalice app
is served over HTTP; a tick loop and SQS pollers call the same handlers Lambda calls, with the
events Lambda would send. Nothing in `chalicelib/` knows whether it runs here or deployed.
"""
