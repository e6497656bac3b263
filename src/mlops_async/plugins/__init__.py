"""Backends that ship with mlops_async as examples of the plugin mechanism.

Each registers under its URL scheme through the ``mlops_async.backends``
entry-point group in ``pyproject.toml``, exactly as a third-party package
would (see :mod:`mlops_async.plugins.postgres` for a complete one).
"""

__all__: list[str] = []
