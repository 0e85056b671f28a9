"""Secrets stay out of errors, logs and reprs: a user's object is only ever described briefly."""

from __future__ import annotations

import os
from typing import Any

import pytest

import trimitogen as tm
from trimitogen._funcref import DESCRIPTION_LIMIT, describe_object

SECRET = "tmg-secret-token-0123456789"


class Holder:
    """A callable instance whose repr would leak a secret."""

    def __repr__(self) -> str:
        return "Holder(token=%r)" % (SECRET * 100,)

    def __call__(self) -> None:
        pass

    def method(self) -> None:
        pass


async def test_refused_callables_are_described_without_their_repr(
    ctx: tm.Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    # os.environ.get's repr is the whole environment, tokens included.
    monkeypatch.setenv("TMG_TEST_TOKEN", SECRET * 100)
    holder = Holder()
    refused: list[Any] = [os.environ.get, holder, holder.method]
    for bad in refused:
        with pytest.raises(TypeError) as info:
            await ctx.call(bad)
        message = str(info.value)
        assert SECRET not in message
        # The fixed advice plus a description of at most DESCRIPTION_LIMIT characters.
        assert len(message) < 250 + DESCRIPTION_LIMIT, message
    with pytest.raises(TypeError, match=r"method Mapping\.get of a _Environ object"):
        await ctx.call(refused[0])


def test_descriptions_are_short_and_name_the_kind() -> None:
    long_name = type("N" * 500, (), {})
    assert describe_object(long_name()) == ("N" * 500 + " object")[: DESCRIPTION_LIMIT - 3] + "..."
    assert describe_object(os.getpid) == "builtin_function_or_method getpid"
    assert describe_object(Holder().method) == "method Holder.method of a Holder object"
    assert SECRET not in describe_object(Holder())
