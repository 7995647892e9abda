"""Types of the compiled read path (purposelimit/_speedups.c); see _records and _context."""

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

API: int

class Guard:
    _member: Any
    index: int
    @property
    def _get(self) -> Any: ...
    def _bind(self, owner: type, /) -> None: ...

class Block:
    _cache: Any
    _nested: Any
    def __enter__(self) -> Any: ...
    def __exit__(self, exc_type: Any, exc: Any, tb: Any, /) -> None: ...

def configure_blocks(
    var: ContextVar[Any],
    active: type,
    epoch: object,
    close: Callable[..., Any],
    refuse_exit: Callable[..., Any],
    enter: Callable[..., Any],
    enter_from: Callable[..., Any],
    exit: Callable[..., Any],
    /,
) -> None: ...
def in_main_interpreter() -> bool: ...
def configure_guards(
    extra: type,
    get: Callable[..., Any],
    read: Callable[..., Any],
    settle: Callable[..., Any],
    denial: Callable[..., Any],
    denied: type[BaseException],
    /,
) -> None: ...
def configure_events(event: type, names: tuple[str, ...], /) -> None: ...
def new_event(*values: Any) -> Any: ...
