"""Tasks API: domain, storage, routes, dispatch and execution. Nothing here knows where it runs."""
