"""The ``processing`` context: which purpose the code is acting under right now.

DESIGN §4: ``with processing("prospection.postal", actor="crm-export"):`` binds
the processing purpose in a :class:`contextvars.ContextVar`, set through a
token and reset in ``finally``: safe across threads, asyncio tasks and nested
blocks, restored on exit even on error. The same object is a decorator for sync
and async functions, with a fresh binding per call.

A process that configures once installs a default engine with
:func:`set_engine`; an explicit ``engine=`` always wins.

Legal source: GDPR art. 5(1)(b) (purpose limitation) and 5(2) (accountability).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar, cast

import attrs

from ._audit import Audit, Mode, resolve_audit
from ._compiled import COMPILED, SPEEDUPS
from ._engine import EPOCH
from ._errors import AuditError, ConfigurationError, NaiveDatetimeError
from ._model import CategoryDecision, Decision, Reason

if TYPE_CHECKING:
    from ._engine import Engine
    from ._register import Register
    from ._store import Store

__all__ = [
    "COMPILED",
    "EngineToken",
    "ProcessingScope",
    "current_processing",
    "default_mode",
    "get_audit",
    "get_engine",
    "processing",
    "set_engine",
]

_P = ParamSpec("_P")
_R = TypeVar("_R")

_MODES = ("enforce", "monitor")
_DECISION_CACHE = 4096


# --------------------------------------------------------------------------- the public scope


def _check_mode(_inst: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in _MODES:
        raise ConfigurationError(f"mode: expected 'enforce' or 'monitor', not {value!r}")


@attrs.frozen(slots=True)
class ProcessingScope:
    """The active processing: what :func:`current_processing` returns. Immutable.

    Attributes:
        purpose: the processing purpose id (DESIGN §2).
        actor: who processes: a job, a service, a user id.
        mode: ``"enforce"`` (a denial raises) or ``"monitor"`` (a denial is
            recorded in the audit trail and the read goes on).
        engine: the engine that decides reads in this scope.
        clock: the injected clock, or ``None`` for the engine's.
    """

    purpose: str
    actor: str
    mode: Mode = attrs.field(validator=_check_mode)
    engine: Engine = attrs.field(eq=False, repr=False)
    clock: Callable[[], datetime] | None = attrs.field(default=None, eq=False, repr=False)


# --------------------------------------------------------------------------- per-engine runtime


class Binding:
    """One processing purpose under one engine runtime: what a memoised decision was made for.

    A record's memo is valid for the active block only when it names the
    block's binding (compared by identity).
    """

    __slots__ = ("purpose",)

    def __init__(self, purpose: str) -> None:
        self.purpose = purpose

    def __repr__(self) -> str:
        return f"<Binding {self.purpose}>"


class Runtime:
    """What the read path keeps per engine: purpose bindings, collection checks, the audit.

    Rebuilt when the engine's register, store or clock is replaced (a new
    ``processing`` block then sees it); the audit survives a rebuild.
    """

    __slots__ = (
        "__weakref__",
        "_bindings",
        "_collectable",
        "_decisions",
        "_engine",
        "audit",
        "audit_source",
        "clock",
        "fast_clock",
        "register",
        "store",
    )

    def __init__(self, engine: Engine, audit: Audit | None = None) -> None:
        from ._engine import _default_clock

        # A weak reference: the runtime is the value of a weak mapping keyed by the engine.
        self._engine = weakref.ref(engine)
        self.register: Register = engine.register
        self.store: Store = engine.store
        self.clock: Callable[[], datetime] = engine.clock
        #: The engine's clock is the default one: the read path may use time.time().
        self.fast_clock = engine.clock is _default_clock
        self.audit_source: object = engine.audit
        self.audit: Audit = resolve_audit(engine.audit) if audit is None else audit
        self._bindings: dict[str, Binding] = {}
        self._collectable: dict[tuple[str, str], Reason | None] = {}
        self._decisions: dict[tuple[str, str, CategoryDecision], Decision] = {}

    @property
    def engine(self) -> Engine:
        """The engine (alive while anything that uses this runtime is)."""
        engine = self._engine()
        if engine is None:  # pragma: no cover - blocks and records keep their engine alive
            raise ConfigurationError("the engine of this processing block no longer exists")
        return engine

    def current(self) -> bool:
        """Whether this runtime still matches its engine."""
        engine = self._engine()
        if engine is None:  # pragma: no cover - see engine
            return False
        return (
            engine.register is self.register
            and engine.store is self.store
            and engine.clock is self.clock
            and engine.audit is self.audit_source
        )

    def binding(self, purpose: str) -> Binding:
        """The binding of *purpose* in this runtime (one object per purpose)."""
        found = self._bindings.get(purpose)
        if found is None:
            found = self._bindings.setdefault(purpose, Binding(purpose))
        return found

    def decision(self, purpose: str, collected_for: str, part: CategoryDecision) -> Decision:
        """The record-level decision of a one-category read, shared between records."""
        key = (purpose, collected_for, part)
        found = self._decisions.get(key)
        if found is None:
            if len(self._decisions) >= _DECISION_CACHE:
                self._decisions.clear()  # decisions naming consent records vary by subject
            found = self._decisions.setdefault(
                key, Decision.combine(purpose, collected_for, (part,))
            )
        return found

    def collectable(self, purpose: str, category: str) -> Reason | None:
        """Why a record collected for *purpose* may not hold *category*, or ``None``."""
        key = (purpose, category)
        try:
            return self._collectable[key]
        except KeyError:
            pass
        problems = self.engine.check_collection(purpose, (category,))
        reason = problems[0][1] if problems else None
        self._collectable[key] = reason
        return reason


_runtimes: weakref.WeakKeyDictionary[Engine, Runtime] = weakref.WeakKeyDictionary()
_runtimes_lock = threading.Lock()


def runtime_for(engine: Engine) -> Runtime:
    """Return the (current) :class:`Runtime` of *engine*."""
    runtime = _runtimes.get(engine)
    if runtime is not None and runtime.current():
        return runtime
    with _runtimes_lock:
        runtime = _runtimes.get(engine)
        if runtime is None or not runtime.current():
            keep = None
            if runtime is not None and runtime.audit_source is engine.audit:
                keep = runtime.audit
            runtime = Runtime(engine, keep)
            _runtimes[engine] = runtime
        return runtime


# --------------------------------------------------------------------------- defaults


class _Defaults:
    __slots__ = ("engine", "mode")

    def __init__(self, engine: Engine | None, mode: Mode) -> None:
        self.engine = engine
        self.mode: Mode = mode


_defaults = _Defaults(None, "enforce")
_defaults_lock = threading.Lock()
_fallback_audit: Audit | None = None


class EngineToken:
    """What :func:`set_engine` returns: restores the previous default when reset.

    Usable as a context manager (``with set_engine(engine): ...``) or by
    calling :meth:`reset` (a pytest fixture's teardown).
    """

    __slots__ = ("_done", "_previous")

    def __init__(self, previous: _Defaults) -> None:
        self._previous = previous
        self._done = False

    def reset(self) -> None:
        """Restore the default engine and mode that were set before; a second call does nothing."""
        global _defaults
        if self._done:
            return
        with _defaults_lock:
            _defaults = self._previous
            EPOCH.advance()
        self._done = True

    def __enter__(self) -> EngineToken:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.reset()


def set_engine(engine: Engine | None, *, mode: Mode | None = None) -> EngineToken:
    """Install the process-wide default engine (and default mode).

    For processes that configure once at start-up. ``processing(...)`` blocks
    without ``engine=`` use it, records check their collection against it when
    no block is active, and reads outside any block are audited through it.
    It is process-wide, not per thread: worker threads and asyncio tasks see it.

    Args:
        engine: the default engine, or ``None`` to remove it.
        mode: the default mode, used by blocks that give none and by reads
            outside any block (``"enforce"`` unless set here).

    Returns:
        An :class:`EngineToken` restoring the previous default on ``reset()``
        or at the end of a ``with`` block.

    Raises:
        ConfigurationError: *mode* is neither ``"enforce"`` nor ``"monitor"``.
    """
    global _defaults
    if mode is not None and mode not in _MODES:
        raise ConfigurationError(f"mode: expected 'enforce' or 'monitor', not {mode!r}")
    with _defaults_lock:
        previous = _defaults
        _defaults = _Defaults(engine, previous.mode if mode is None else mode)
        EPOCH.advance()  # blocks using the defaults prepare anew
    return EngineToken(previous)


def get_engine() -> Engine | None:
    """Return the default engine installed by :func:`set_engine`, or ``None``."""
    return _defaults.engine


def default_mode() -> Mode:
    """Return the default mode: ``"enforce"`` unless :func:`set_engine` set another."""
    return _defaults.mode


def get_audit(engine: Engine | None = None) -> Audit:
    """Return the :class:`Audit` that records reads decided by *engine*.

    Args:
        engine: the engine; the active block's, else the default engine, when omitted.

    Returns:
        The engine's ``audit`` when it is an :class:`Audit`; the default
        ``Audit()`` created for an engine whose ``audit`` is ``None``; and with
        no engine at all, the fallback audit of reads outside any block (one
        :class:`~purposelimit.LoggingAuditSink`).
    """
    if engine is None:
        active = _CURRENT.get()
        engine = active.runtime.engine if active is not None else _defaults.engine
    if engine is None:
        return fallback_audit()
    return runtime_for(engine).audit


def fallback_audit() -> Audit:
    """The audit of reads outside any block when no default engine is installed."""
    global _fallback_audit
    if _fallback_audit is None:
        with _defaults_lock:
            if _fallback_audit is None:
                _fallback_audit = Audit()
    return _fallback_audit


# --------------------------------------------------------------------------- the active binding


def _aware_timestamp(clock: Callable[[], datetime]) -> Callable[[], float]:
    def now() -> float:
        value = clock()
        if value.tzinfo is None or value.utcoffset() is None:
            raise NaiveDatetimeError(
                "the processing clock returned a naive datetime: give it a timezone"
            )
        return value.timestamp()

    return now


class Active:
    """What the ContextVar holds while a block runs: the scope and the read path's shortcuts.

    What the read path uses never changes after it is made, so one is shared
    by every entry of its ``processing`` object that starts from the same
    outer value: ``block`` is that object (only it may exit the entry),
    ``previous`` the ContextVar's value to restore on exit (``None`` outside
    any block) and ``token`` the ContextVar token of its latest entry, which
    exits with it unless another context entered meanwhile (then exit sets
    ``previous`` back instead).
    """

    __slots__ = (
        "audit",
        "binding",
        "block",
        "buffer",
        "clock",
        "engine",
        "monitor",
        "now",
        "previous",
        "runtime",
        "scope",
        "store",
        "token",
    )

    def __init__(
        self,
        scope: ProcessingScope,
        runtime: Runtime,
        block: object = None,
        previous: Active | None = None,
    ) -> None:
        self.block = block
        self.previous = previous
        self.token: contextvars.Token[Active | None] | None = None
        self.scope = scope
        self.runtime = runtime
        self.engine = runtime.engine
        self.binding = runtime.binding(scope.purpose)
        self.store = runtime.store
        audit = runtime.audit
        self.audit = audit
        self.buffer = audit._buffer
        self.monitor = scope.mode == "monitor"
        clock = scope.clock
        if clock is None and runtime.fast_clock:
            self.clock: Callable[[], datetime] | None = None
            self.now: Callable[[], float] = time.time
        else:
            self.clock = runtime.clock if clock is None else clock
            self.now = _aware_timestamp(self.clock)

    def under(self, previous: Active) -> Active:
        """A copy for an entry nested in *previous* (restored when that entry exits)."""
        new = Active.__new__(Active)
        new.block = self.block
        new.previous = previous
        new.token = None
        new.scope = self.scope
        new.runtime = self.runtime
        new.engine = self.engine
        new.binding = self.binding
        new.store = self.store
        new.audit = self.audit
        new.buffer = self.buffer
        new.monitor = self.monitor
        new.clock = self.clock
        new.now = self.now
        return new

    # The reader as audit events describe it (cold: used when the buffer is drained).
    @property
    def actor(self) -> str | None:
        return self.scope.actor

    @property
    def purpose(self) -> str | None:
        return self.scope.purpose

    @property
    def mode(self) -> Mode:
        return self.scope.mode

    @property
    def register(self) -> Register | None:
        return self.runtime.register

    def instant(self) -> tuple[float, datetime]:
        """The current instant as (POSIX timestamp, aware datetime), from one clock reading."""
        clock = self.clock
        if clock is None:
            stamp = time.time()
            return stamp, datetime.fromtimestamp(stamp, UTC)
        value = clock()
        if value.tzinfo is None or value.utcoffset() is None:
            raise NaiveDatetimeError(
                "the processing clock returned a naive datetime: give it a timezone"
            )
        return value.timestamp(), value


_CURRENT: contextvars.ContextVar[Active | None] = contextvars.ContextVar(
    "purposelimit_processing", default=None
)
_current_get = _CURRENT.get
_current_set = _CURRENT.set
_current_reset = _CURRENT.reset


def current_processing() -> ProcessingScope | None:
    """Return the active :class:`ProcessingScope` (purpose, actor, mode), or ``None``."""
    active = _CURRENT.get()
    return None if active is None else active.scope


def _close(active: Active, error: BaseException | None) -> None:
    """Drain the audit when a block ends; a fail-closed failure raises unless one is in flight."""
    if not active.buffer:
        return
    try:
        active.audit._drain()
    except AuditError as audit_error:
        if error is None:
            raise
        error.add_note(f"purposelimit: the audit could not be written either: {audit_error}")


def _new_processing(
    cls: type[processing],
    purpose: str,
    actor: str,
    engine: Engine | None,
    mode: Mode | None,
    clock: Callable[[], datetime] | None,
) -> processing:
    """Rebuild a ``processing`` object from its arguments (copies and pickles share nothing)."""
    return cls(purpose, actor=actor, engine=engine, mode=mode, clock=clock)


def _refuse_exit(block: object) -> NoReturn:
    """Raise for a block exited while another one is active (exits go in reverse order)."""
    raise RuntimeError(
        f"{block!r} exited while another processing block was active: blocks must "
        "exit in the reverse order of entry (a generator that yields inside a "
        "block leaves it open in its caller)"
    )


class _PyBlock:
    """``processing``'s entry and exit, in Python: the reference for ``_speedups.Block``.

    ``_cache`` holds the Active of an entry from outside any block and the
    configuration epoch it was made in (EPOCH.current): one tuple, so that
    threads sharing the object never see a mismatched pair. ``_nested`` holds
    the Active of the last entry nested in another block (its ``previous``).
    """

    __slots__ = ("_cache", "_nested")

    _cache: tuple[object, Active] | None
    _nested: Active | None

    def _activate(self) -> Active:
        raise NotImplementedError

    def _under(self, active: Active, previous: Active) -> Active:
        raise NotImplementedError

    def __enter__(self) -> ProcessingScope:
        # _activate() inlined for its common case: the cached Active still fits.
        cache = self._cache
        active = cache[1] if cache is not None and cache[0] is EPOCH.current else self._activate()
        return _enter_from(self, active)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        active = _current_get()
        if active is None or active.block is not self:
            _refuse_exit(self)
        try:
            _current_reset(active.token)  # type: ignore[arg-type]  # None: TypeError, below
        except (RuntimeError, TypeError, ValueError):
            # The token is another context's (this object was entered in another
            # thread or task meanwhile), or already used: set the value back.
            _current_set(active.previous)
        if active.buffer:
            _close(active, exc)


def _enter_from(block: _PyBlock, active: Active) -> ProcessingScope:
    """``_PyBlock.__enter__`` once *active* is known (also the compiled entry's hand-over
    for an *active* that is not exactly an :class:`Active`): nest it, set it, return its scope."""
    previous = _current_get()
    if previous is not None:
        nested = block._nested  # _under() inlined for its common case
        if nested is not None and nested.previous is previous and nested.scope is active.scope:
            active = nested
        else:
            active = block._under(active, previous)
    active.token = _current_set(active)
    return active.scope


if TYPE_CHECKING:
    _BlockBase = _PyBlock
else:
    _BlockBase = _PyBlock if SPEEDUPS is None else SPEEDUPS.Block


class processing(_BlockBase):  # noqa: N801 - a lower-case name, like contextlib's context managers
    """Bind a processing purpose: a context manager and a decorator (DESIGN §4).

    ``with processing("prospection.postal", actor="crm-export"):`` makes every
    guarded read inside it a read *for* ``prospection.postal``, decided by the
    engine and audited. Blocks nest (the inner one wins, the outer one is
    restored on exit, even on error); each thread and each asyncio task sees
    only the blocks it entered itself (tasks inherit the block active when they
    were created). As a decorator on a sync or ``async`` function, each call
    runs in a fresh block. Decorating a generator function is refused: its
    body runs piecemeal, outside the call; enter the block inside it.

    On exit the audit buffer is drained into the sinks.

    Args:
        purpose: the processing purpose id (``prospection.postal``).
        actor: who processes (a job, a service, a user id); recorded in audit events.
        engine: the engine deciding reads; the default engine (:func:`set_engine`)
            when omitted, resolved at each entry.
        mode: ``"enforce"`` (a denial raises :class:`~purposelimit.ProcessingDenied`)
            or ``"monitor"`` (a denial is recorded as a monitored audit event and
            the read goes on); the default mode when omitted.
        clock: returns the current instant as an aware datetime; the engine's
            clock when omitted.

    Raises:
        ConfigurationError: a bad argument, or (on entry) no engine given and
            none installed.
    """

    __slots__ = ("_engine", "_mode", "actor", "clock", "purpose")

    def __init__(
        self,
        purpose: str,
        *,
        actor: str,
        engine: Engine | None = None,
        mode: Mode | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if not isinstance(purpose, str) or not purpose:
            raise ConfigurationError("processing: the purpose is a non-empty purpose id")
        if not isinstance(actor, str) or not actor.strip():
            raise ConfigurationError("processing: name the actor (a job, a service, a user id)")
        if mode is not None and mode not in _MODES:
            raise ConfigurationError(f"mode: expected 'enforce' or 'monitor', not {mode!r}")
        if clock is not None and not callable(clock):
            raise ConfigurationError("clock: a callable returning an aware datetime")
        self.purpose = purpose
        self.actor = actor
        self._engine = engine
        self._mode: Mode | None = mode
        self.clock = clock
        self._cache = None  # see _PyBlock
        self._nested = None

    @property
    def engine(self) -> Engine | None:
        """The engine given, or ``None`` for the default engine (resolved at each entry)."""
        return self._engine

    @engine.setter
    def engine(self, engine: Engine | None) -> None:
        self._engine = engine
        self._cache = None

    @property
    def mode(self) -> Mode | None:
        """The mode given, or ``None`` for the default mode (resolved at each entry)."""
        return self._mode

    @mode.setter
    def mode(self, mode: Mode | None) -> None:
        if mode is not None and mode not in _MODES:
            raise ConfigurationError(f"mode: expected 'enforce' or 'monitor', not {mode!r}")
        self._mode = mode
        self._cache = None

    def __repr__(self) -> str:
        return f"processing({self.purpose!r}, actor={self.actor!r}, mode={self.mode!r})"

    def __copy__(self) -> processing:
        """A new block of the same class and arguments (engine and clock shared), prepared anew."""
        return _new_processing(
            type(self), self.purpose, self.actor, self._engine, self._mode, self.clock
        )

    def __deepcopy__(self, memo: dict[int, Any]) -> processing:
        """As :meth:`__copy__`: the engine is configuration, shared, and nothing prepared is."""
        return self.__copy__()

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickles when its engine and clock do (an Engine holds a lock: it does not).
        return (
            _new_processing,
            (type(self), self.purpose, self.actor, self._engine, self._mode, self.clock),
        )

    def _activate(self) -> Active:
        """The Active of an entry from outside any block (``previous`` is ``None``).

        Reused while the configuration epoch is the one it was made in: no
        engine's register, store, clock or audit and no default (:func:`set_engine`)
        has been replaced since, nor this object's ``engine`` or ``mode``
        (their setters forget it); made anew otherwise.
        """
        cache = self._cache
        if cache is not None and cache[0] is EPOCH.current:
            return cache[1]
        epoch = EPOCH.current  # read first: a change meanwhile makes the next entry rebuild
        defaults = _defaults
        engine = self._engine
        if engine is None:
            engine = defaults.engine
            if engine is None:
                raise ConfigurationError(
                    f"processing({self.purpose!r}): no engine. Remedy: pass engine=..., or "
                    "install a default engine once with purposelimit.set_engine(engine)"
                )
        mode = self._mode or defaults.mode
        runtime = runtime_for(engine)
        scope = ProcessingScope(self.purpose, self.actor, mode, engine, self.clock)
        active = Active(scope, runtime, self)
        self._cache = (epoch, active)
        return active

    def _under(self, active: Active, previous: Active) -> Active:
        """The Active of an entry nested in the block whose Active is *previous*."""
        nested = self._nested
        if nested is None or nested.previous is not previous or nested.scope is not active.scope:
            nested = self._nested = active.under(previous)
        return nested

    async def __aenter__(self) -> ProcessingScope:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # ------------------------------------------------------------------ decorator

    def __call__(self, func: Callable[_P, _R]) -> Callable[_P, _R]:
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            raise TypeError(
                f"processing cannot decorate the generator function {func.__qualname__}: its "
                "body runs after the call returns. Enter `with processing(...)` inside it"
            )
        if inspect.iscoroutinefunction(func):
            coroutine = cast(Callable[_P, Awaitable[Any]], func)

            @functools.wraps(func)
            async def run_async(*args: _P.args, **kwargs: _P.kwargs) -> Any:
                active = self._activate()
                token = _CURRENT.set(active)
                try:
                    result = await coroutine(*args, **kwargs)
                except BaseException as error:
                    _CURRENT.reset(token)
                    _close(active, error)
                    raise
                _CURRENT.reset(token)
                _close(active, None)
                return result

            return cast(Callable[_P, _R], run_async)

        @functools.wraps(func)
        def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            active = self._activate()
            token = _CURRENT.set(active)
            try:
                result = func(*args, **kwargs)
            except BaseException as error:
                _CURRENT.reset(token)
                _close(active, error)
                raise
            _CURRENT.reset(token)
            _close(active, None)
            return result

        return run


if SPEEDUPS is not None:
    SPEEDUPS.configure_blocks(
        _CURRENT,
        Active,
        EPOCH,
        _close,
        _refuse_exit,
        _PyBlock.__enter__,
        _enter_from,
        _PyBlock.__exit__,
    )
