"""The error map at the seam: listed driver errors become ours, everything else propagates."""

from __future__ import annotations

from mlops_async import AuthenticationError, BusUnavailable, PublishError
from mlops_async.backends.base import translate
from mlops_async.backends.redis import _ERRORS as REDIS_ERRORS
from redis import exceptions as rex


def test_listed_errors_translate_with_the_driver_error_as_cause() -> None:
    exc = rex.ConnectionError("connection refused")
    err = translate(exc, "read", REDIS_ERRORS)
    assert isinstance(err, BusUnavailable) and err.__cause__ is exc
    assert str(err) == "read: connection refused"
    # Refused credentials come before the ConnectionError they subclass.
    assert isinstance(translate(rex.AuthenticationError("x"), "w", REDIS_ERRORS),
                      AuthenticationError)
    assert isinstance(translate(rex.ResponseError("WRONGPASS bad"), "w", REDIS_ERRORS),
                      AuthenticationError)
    assert isinstance(translate(rex.ResponseError("ERR syntax"), "w", REDIS_ERRORS),
                      PublishError)


def test_anything_unlisted_propagates_unchanged() -> None:
    bug = TypeError("unexpected keyword argument 'claim_timeout'")
    assert translate(bug, "cannot connect", REDIS_ERRORS) is bug
    err = translate(rex.TimeoutError(""), "connect", REDIS_ERRORS)
    assert isinstance(err, BusUnavailable)
    assert str(err) == "connect: TimeoutError"  # never an empty message
