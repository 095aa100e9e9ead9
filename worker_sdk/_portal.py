"""Drive asyncio code from ordinary threads, so `SyncClient` is `Client` rather than a copy of it.

A `Portal` runs one event loop on a private daemon thread. Other threads hand it coroutines
and block until they finish. `opening`, `blocking` and `iterating` make a synchronous class
out of an async one: the same constructor parameters, and methods with the same parameters
and docstrings, typed by ParamSpec so that mypy sees the synchronous signatures.

Waiting can be interrupted (Ctrl-C): the interrupted coroutine is cancelled on the loop and
the interruption propagates. Each call runs in a copy of the caller's `contextvars`, so the
caller's trace context reaches the coroutine as it would with ``await``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import enum
import functools
import inspect
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, Concatenate, Generic, Literal, ParamSpec, Protocol, TypeVar

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
A = TypeVar("A", covariant=True)


class PortalClosed(RuntimeError):
    """The portal was closed before or during the call."""


class Portal:
    """An event loop on a daemon thread; any thread may run coroutines on it and wait."""

    _loop: asyncio.AbstractEventLoop
    _stopped: asyncio.Event

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._closed = False
        self._last: Callable[[], Awaitable[None]] | None = None
        self._error: Exception | None = None
        started = threading.Event()
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._serve(started),), name=name, daemon=True
        )
        self._thread.start()
        started.wait()

    async def _serve(self, started: threading.Event) -> None:
        # asyncio.run does the shutdown: it cancels what is still running (waiting threads
        # get PortalClosed), finalizes async generators and closes the loop.
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        started.set()
        await self._stopped.wait()
        if self._last is not None:
            try:
                await self._last()
            except Exception as error:  # handed to close()'s caller
                self._error = error

    def call(self, function: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``function(*args, **kwargs)`` on the loop; return its result or raise its
        exception here.

        It takes the function rather than a coroutine so that a caller interrupted before
        the loop starts it leaves no coroutine behind, never awaited.

        Raises:
            PortalClosed: the portal is closed, or closed while the call ran.
        """
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        # Ctrl-C may strike inside call_soon_threadsafe after the loop has the callback, or
        # as the lock is released: the `try` covers both, so an interrupted call is always
        # cancelled, never left running with nobody waiting (tests/unit/test_portal_signals.py).
        try:
            with self._lock:
                if self._closed or threading.current_thread() is self._thread:
                    raise PortalClosed(
                        f"{self._name} is closed"
                        if self._closed
                        else f"{self._name} was called from its own thread, which would wait "
                        "forever"
                    )
                context = contextvars.copy_context()
                job = functools.partial(function, *args, **kwargs)
                self._loop.call_soon_threadsafe(self._start, job, future, context)
            _wait(future)
        except BaseException:  # Ctrl-C (KeyboardInterrupt), a signal handler's exception
            future.cancel()  # `_start` then starts nothing, or cancels what it started
            raise
        return future.result()

    def make(self, factory: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``factory(*args, **kwargs)`` called on the loop, for objects bound to the loop."""
        return self.call(_made, functools.partial(factory, *args, **kwargs))

    def _start(
        self,
        job: Callable[[], Awaitable[T]],
        future: concurrent.futures.Future[T],
        context: contextvars.Context,
    ) -> None:
        if future.cancelled():  # the caller was interrupted before the loop got to it
            return
        task = self._loop.create_task(_awaited(job), context=context)
        task.add_done_callback(functools.partial(_settle, future, self._name))
        future.add_done_callback(functools.partial(self._cancel_if_abandoned, task))

    def _cancel_if_abandoned(
        self, task: asyncio.Task[Any], future: concurrent.futures.Future[Any]
    ) -> None:
        if future.cancelled():
            with contextlib.suppress(RuntimeError):  # the loop is closed: task already ended
                self._loop.call_soon_threadsafe(task.cancel)

    def iterate(self, items: AsyncIterator[T]) -> Iterator[T]:
        """Iterate over `items` on the loop, one step per `next`; closing closes `items`."""
        steps = _Steps(items)
        try:
            while (item := self.call(steps.next)) is not _End.END:
                yield item
        finally:
            with contextlib.suppress(PortalClosed):  # closing the portal closed `items`
                self.call(steps.close)

    def close(self, last: Callable[[], Awaitable[None]] | None = None) -> None:
        """Await `last()` on the loop, stop the loop and join its thread; idempotent.

        Calls still running are cancelled (their callers get `PortalClosed`).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._last = last
            self._loop.call_soon_threadsafe(self._stopped.set)
        if threading.current_thread() is self._thread:
            return  # a finalizer ran on the loop's own thread: it stops once this returns
        self._thread.join()
        if self._error is not None:
            raise self._error


async def _awaited(job: Callable[[], Awaitable[T]]) -> T:
    return await job()  # made in the task, whose exception it is if making it fails


async def _made(factory: Callable[[], T]) -> T:
    return factory()


def _settle(future: concurrent.futures.Future[T], name: str, task: asyncio.Task[T]) -> None:
    abandoned = not future.set_running_or_notify_cancel()
    if task.cancelled():
        if not abandoned:
            future.set_exception(PortalClosed(f"{name} was closed during the call"))
        return
    error = task.exception()  # retrieved even when abandoned, so asyncio does not log it
    if abandoned:
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(task.result())


class _End(enum.Enum):
    END = enum.auto()


class _Steps(Generic[T]):
    """An async iterator stepped from another thread.

    A step and the closing never overlap: closing after an interrupted step waits until the
    cancelled step has unwound, instead of failing with "already running".
    """

    def __init__(self, items: AsyncIterator[T]) -> None:
        self._items = items
        self._lock = asyncio.Lock()

    async def next(self) -> T | Literal[_End.END]:
        async with self._lock:
            try:
                return await anext(self._items)
            except StopAsyncIteration:
                return _End.END

    async def close(self) -> None:
        async with self._lock:
            if isinstance(self._items, AsyncGenerator):
                await self._items.aclose()


class Bridged(Protocol[A]):
    """A synchronous object that runs the async object `_async` on `_portal`."""

    @property
    def _portal(self) -> Portal: ...

    @property
    def _async(self) -> A: ...


S = TypeVar("S")


def opening(
    factory: Callable[P, T], name: str
) -> Callable[[Callable[[S, Portal, T], None]], Callable[Concatenate[S, P], None]]:
    """Decorate the ``__init__`` of a synchronous twin: it takes `factory`'s parameters.

    The new ``__init__`` starts a `Portal` (its thread named `name`), makes the async object
    on the portal's loop (objects such as grpc.aio channels belong to the loop they are made
    on) and hands both to the decorated one.
    """

    def decorate(init: Callable[[S, Portal, T], None]) -> Callable[Concatenate[S, P], None]:
        def __init__(self: S, /, *args: P.args, **kwargs: P.kwargs) -> None:
            portal = Portal(name)
            try:
                made = portal.make(factory, *args, **kwargs)
            except BaseException:
                portal.close()
                raise
            init(self, portal, made)

        functools.update_wrapper(__init__, init)
        self_ = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
        parameters = [self_, *inspect.signature(factory).parameters.values()]
        signature = inspect.Signature(parameters, return_annotation="None")
        __init__.__signature__ = signature  # type: ignore[attr-defined]
        return __init__

    return decorate


SIGNAL_SLICE_S = 0.1


def _wait(future: concurrent.futures.Future[Any]) -> None:
    """Until `future` is done. On the main thread, in slices, so that Ctrl-C always ends it.

    A process-wide signal goes to whichever thread the kernel picks. When that is the
    portal's thread or one of grpc's, CPython only marks the signal pending for the main
    thread, and a main thread blocked on a lock without a timeout never runs the handler:
    the script would ignore Ctrl-C until the call ended (tests/unit/test_portal_signals.py
    makes it happen on purpose). Waking every `SIGNAL_SLICE_S` lets the
    main thread run the pending handler; other threads cannot receive signals' handlers,
    so they wait in one piece.
    """
    if threading.current_thread() is not threading.main_thread():
        future.exception()
        return
    while True:
        try:
            future.exception(timeout=SIGNAL_SLICE_S)
            return
        except concurrent.futures.TimeoutError:
            continue


def blocking(
    method: Callable[Concatenate[A, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[Bridged[A], P], R]:
    """A synchronous method that runs the coroutine method `method` and returns its result."""

    def call(self: Bridged[A], /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._portal.call(method, self._async, *args, **kwargs)

    return _like(call, method)


def iterating(
    method: Callable[Concatenate[A, P], AsyncIterator[T]],
) -> Callable[Concatenate[Bridged[A], P], Iterator[T]]:
    """A synchronous method that returns an iterator over what `method`'s async iterator yields."""

    def call(self: Bridged[A], /, *args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        return self._portal.iterate(method(self._async, *args, **kwargs))

    wrapper = _like(call, method)
    signature = inspect.signature(method)
    returns = signature.return_annotation
    if isinstance(returns, str):  # postponed annotations: say what the sync method returns
        returns = returns.replace("AsyncIterator[", "Iterator[", 1)
    wrapper.__signature__ = signature.replace(return_annotation=returns)  # type: ignore[attr-defined]
    return wrapper


def _like(wrapper: Callable[P, R], method: Callable[..., Any]) -> Callable[P, R]:
    """`wrapper`, named and documented as `method` (``inspect.signature`` follows it too)."""
    functools.update_wrapper(wrapper, method)
    return wrapper
