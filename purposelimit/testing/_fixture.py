"""What the ``purposelimit`` pytest fixture gives a test (no pytest import here)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, TypeVar

from .._audit import Mode
from .._context import processing
from .._engine import Engine
from .._errors import ConfigurationError
from .._model import Consent, Objection
from .._register import Register
from .._store import Store, Withdrawal
from ._capture import AuditCapture, ReasonSpec, assert_allowed, assert_denied
from ._clock import FrozenClock
from ._factories import make_consent, make_objection, make_record, make_withdrawal

__all__ = ["PurposeLimitFixture"]

_R = TypeVar("_R")

_NO_ENGINE = (
    "the purposelimit fixture has no engine. Remedy: mark the test with "
    "@pytest.mark.purposelimit(register=...) (a register file or a preset name), set "
    "purposelimit_register in the pytest configuration, or install a default engine "
    "with purposelimit.set_engine(engine) in a fixture"
)


class PurposeLimitFixture:
    """The ``purposelimit`` fixture: the test's engine, frozen clock and audit capture.

    Configured by the ``@pytest.mark.purposelimit(...)`` marker of the test
    (see docs/testing.md): ``register=`` builds an engine for the test
    (frozen clock, in-memory store and audit) installed as the default engine;
    without it the default engine already installed, if any, is used.
    ``purpose=`` runs the whole test inside ``processing(purpose, ...)``;
    ``mode=`` sets the mode. Every guarded read of the test is captured in
    :attr:`events`.

    Attributes:
        purpose: the marker's processing purpose, or ``None``.
        mode: the marker's mode, or ``None`` (the default mode).
        actor: the actor of the test's processing blocks: ``pytest:<node id>``.
        events: the :class:`AuditCapture` of the test's guarded reads.
    """

    def __init__(
        self,
        *,
        engine: Engine | None,
        events: AuditCapture,
        actor: str,
        purpose: str | None = None,
        mode: Mode | None = None,
    ) -> None:
        self._engine = engine
        self.events = events
        self.actor = actor
        self.purpose = purpose
        self.mode: Mode | None = mode

    def __repr__(self) -> str:
        return (
            f"<purposelimit fixture purpose={self.purpose!r} mode={self.mode!r} "
            f"engine={'yes' if self._engine is not None else 'no'}>"
        )

    # ------------------------------------------------------------------ what the test runs with

    @property
    def engine(self) -> Engine:
        """The test's engine.

        Raises:
            ConfigurationError: no register was given and no default engine is installed.
        """
        __tracebackhide__ = True  # pytest shows the test's line
        if self._engine is None:
            raise ConfigurationError(_NO_ENGINE)
        return self._engine

    @property
    def register(self) -> Register:
        """The test's register."""
        return self.engine.register

    @property
    def store(self) -> Store:
        """The engine's consent store (an in-memory one for an engine the fixture built)."""
        return self.engine.store

    @property
    def clock(self) -> FrozenClock:
        """The engine's frozen clock: ``clock.shift("P3Y")``, ``clock.move_to(...)``.

        Raises:
            ConfigurationError: the engine's clock is not a :class:`FrozenClock`
                (a default engine the fixture did not build, without ``at=``).
        """
        clock = self.engine.clock
        if not isinstance(clock, FrozenClock):
            raise ConfigurationError(
                "the engine's clock is not frozen. Remedy: give the marker at=... "
                "(@pytest.mark.purposelimit(at='2026-03-01T10:00:00Z')), or build the engine "
                "with a purposelimit.testing.FrozenClock"
            )
        return clock

    def now(self) -> datetime:
        """The engine's current instant (aware)."""
        return self.engine.now()

    # ------------------------------------------------------------------ helpers

    def processing(
        self, purpose: str | None = None, *, actor: str | None = None, mode: Mode | None = None
    ) -> processing:
        """A ``processing`` block on the test's engine: the marker's purpose and mode by default.

        Raises:
            ConfigurationError: no purpose given and none in the marker; no engine.
        """
        chosen = purpose if purpose is not None else self.purpose
        if chosen is None:
            raise ConfigurationError(
                "processing(): name the purpose, or give the marker purpose=..."
            )
        return processing(
            chosen,
            actor=actor if actor is not None else self.actor,
            engine=self.engine,
            mode=mode if mode is not None else self.mode,
        )

    def record(self, cls: Callable[..., _R], /, *args: Any, **kwargs: Any) -> _R:
        """Build a tagged record like :func:`make_record`, collected now by default."""
        kwargs.setdefault("collected_at", self.now())
        return make_record(cls, *args, **kwargs)

    def _record(self, event: Any) -> None:
        recorder = getattr(self.store, "record", None)
        if recorder is None:
            raise ConfigurationError(
                f"the engine's store ({type(self.store).__name__}) cannot record events: "
                "record them in your own store"
            )
        recorder(event, actor=self.actor)

    def consent(
        self, subject: str, *purposes: str, at: datetime | str | None = None, **kwargs: Any
    ) -> Consent:
        """Record a consent of *subject* for *purposes* in the store (given now by default).

        Keyword arguments are those of :func:`make_consent` (``state``,
        ``mechanism``, ``withdrawn_at``, ``expires_at``, ``id``).
        """
        consent = make_consent(subject, *purposes, at=self.now() if at is None else at, **kwargs)
        self._record(consent)
        return consent

    def withdraw(
        self, subject: str, *purposes: str, at: datetime | str | None = None
    ) -> Withdrawal:
        """Record the withdrawal of *subject*'s consent for *purposes* (now by default)."""
        withdrawal = make_withdrawal(subject, *purposes, at=self.now() if at is None else at)
        self._record(withdrawal)
        return withdrawal

    def objection(
        self,
        subject: str,
        *,
        at: datetime | str | None = None,
        withdrawn_at: datetime | str | None = None,
    ) -> Objection:
        """Record *subject*'s objection to direct marketing (made now by default)."""
        objection = make_objection(
            subject, at=self.now() if at is None else at, withdrawn_at=withdrawn_at
        )
        self._record(objection)
        return objection

    def assert_allowed(self, *, reason: ReasonSpec = None) -> AbstractContextManager[AuditCapture]:
        """:func:`~purposelimit.testing.assert_allowed`."""
        return assert_allowed(reason=reason)

    def assert_denied(self, *, reason: ReasonSpec = None) -> AbstractContextManager[AuditCapture]:
        """:func:`~purposelimit.testing.assert_denied`."""
        return assert_denied(reason=reason)
