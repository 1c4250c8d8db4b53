"""The local stack fixture lives in `tests/stack.py` and is registered once, by `tests/conftest.py`,
so every suite on a test worker (e2e, clients, browser) shares one stack instead of starting its own."""
