from typing import Any, Callable, TypeVar

_F = TypeVar("_F", bound=Callable[..., Any])

def trio_fixture(func: _F) -> _F: ...
