"""What the router routes by (the rollout and each model's champion), refreshed from the registry
in the background with short timeouts and kept last-known-good: a registry that is slow, hung or
down never delays a request; `/healthz` says since when the state is stale."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from llama_mapper.serving.arms import RolloutView

log = logging.getLogger(__name__)


class RolloutSource(Protocol):
    """The registry as the router reads it (sync calls, run off the event loop)."""

    def rollout(self, model: str) -> RolloutView | None: ...

    def champion(self, model: str, alias: str) -> int | None: ...

    def temperature(self, model: str, version: int) -> float: ...

    def calibration(self, model: str, version: int) -> tuple[float, str, float | None]: ...


class DaemonExecutor(Executor):
    """One daemon thread working a queue of calls. A registry call that never returns (a
    SIGSTOPped registry) holds this thread and nothing else: unlike ThreadPoolExecutor's
    workers, which the interpreter joins at exit, it never keeps the process from exiting."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._calls: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._calls.put((future, fn, args, kwargs))
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
                self._thread.start()
        return future

    def _work(self) -> None:
        while True:
            future, fn, args, kwargs = self._calls.get()
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while queued (its caller timed out)
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed to the caller, as an executor does
                future.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new calls; queued ones cancelled when asked. `wait` waits for the queue to drain
        (never for a call that hangs: wait=False is what a router closing on a hung registry
        wants)."""
        with self._lock:
            self._closed = True
        if cancel_futures:
            while True:
                try:
                    future, *_ = self._calls.get_nowait()
                except queue.Empty:
                    break
                future.cancel()
        if wait and self._thread is not None:
            done: Future[None] = Future()
            self._calls.put((done, lambda: None, (), {}))
            done.result()


@dataclass(frozen=True)
class RoutingSnapshot:
    rollout: RolloutView | None = None
    champions: Mapping[str, int] = field(default_factory=dict)
    refreshed_at: float = 0.0  # wall clock of the refresh that produced it; 0: never


class RoutingState:
    """The last-known-good snapshot and the loop that replaces it."""

    def __init__(
        self,
        source: RolloutSource | None,
        models: Sequence[str],
        alias: str,
        *,
        interval_s: float,
        timeout_s: float,
        local_champions: Mapping[str, int] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self.models = tuple(models)
        self.alias = alias
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.clock = clock
        self.snapshot = RoutingSnapshot(
            champions=dict(local_champions or {}), refreshed_at=clock() if source is None else 0.0
        )
        self.failing_since: float | None = None
        self.last_error = ""
        # Registry calls run on their own thread: one that hangs holds this thread, never the
        # event loop, the threads the engines' handles use, or the process's exit.
        self._executor = DaemonExecutor("registry-refresh")

    def _read(self) -> RoutingSnapshot:
        assert self.source is not None
        rollout = self.source.rollout(self.models[0])
        champions = {}
        for model in self.models:
            version = self.source.champion(model, self.alias)
            if version:
                champions[model] = version
        return RoutingSnapshot(rollout, champions, self.clock())

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` on the registry thread, within timeout_s (TimeoutError past it). Not
        asyncio.wait_for: on 3.11 it can swallow a cancellation that races the result, and a
        refresh loop that cannot be cancelled never lets its event loop close."""
        call = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        try:
            done, _ = await asyncio.wait({call}, timeout=self.timeout_s)
        except asyncio.CancelledError:
            call.cancel()
            raise
        if not done:
            call.cancel()
            raise TimeoutError(f"no answer from the registry within {self.timeout_s:g}s")
        return call.result()

    async def calibration(self, model: str, version: int) -> tuple[float, str, float | None]:
        """(temperature, calibrator JSON, threshold) of a version, within timeout_s."""
        assert self.source is not None
        read = getattr(self.source, "calibration", None)
        if read is None:  # a source that only knows temperatures
            return (await self._call(self.source.temperature, model, version), "", None)
        return await self._call(read, model, version)

    async def refresh(self) -> bool:
        """One refresh within timeout_s; on failure the snapshot stays and the state goes stale."""
        if self.source is None:
            return True
        try:
            snapshot = await self._call(self._read)
        except Exception as exc:  # TimeoutError included: the registry being slow must not matter
            if self.failing_since is None:
                self.failing_since = self.clock()
                log.warning(
                    "registry refresh failed (%s): keeping the last state",
                    exc or type(exc).__name__,
                )
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            return False
        if self.failing_since is not None:
            log.info("registry refresh works again after %.1fs", self.clock() - self.failing_since)
        self.snapshot, self.failing_since, self.last_error = snapshot, None, ""
        return True

    async def run(self, on_change: Callable[[RoutingSnapshot], None]) -> None:
        """Refreshes every interval_s forever, calling `on_change` with each new snapshot."""
        while True:
            if await self.refresh():
                on_change(self.snapshot)
            await asyncio.sleep(self.interval_s)

    def health(self) -> dict[str, Any]:
        if self.source is None:
            return {"state": "local", "refreshed_at": None, "stale_since": None}
        state = "stale" if self.failing_since is not None else "fresh"
        if not self.snapshot.refreshed_at:
            state = "never"
        return {
            "state": state,
            "refreshed_at": self.snapshot.refreshed_at or None,
            "stale_since": self.failing_since,
            **({"error": self.last_error} if self.last_error else {}),
        }

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
