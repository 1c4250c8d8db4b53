"""The AWS resources of the Tasks API, defined once in `resources.json`."""
