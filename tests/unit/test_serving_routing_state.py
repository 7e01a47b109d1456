"""The router's registry refresh: a hung registry holds one daemon thread and nothing else."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from llama_mapper.serving.routing_state import DaemonExecutor, RoutingState


class HungSource:
    """A registry that never answers (a SIGSTOPped process)."""

    def __init__(self) -> None:
        self.entered = threading.Event()

    def rollout(self, model):
        self.entered.set()
        threading.Event().wait()

    def champion(self, model, alias):
        return None


def test_a_hung_registry_times_out_and_the_state_goes_stale():
    source = HungSource()
    state = RoutingState(source, ["mapper"], "champion", interval_s=1.0, timeout_s=0.1)
    started = time.monotonic()
    assert asyncio.run(state.refresh()) is False
    assert time.monotonic() - started < 2.0 and source.entered.is_set()
    health = state.health()
    assert health["state"] == "never" and "no answer from the registry" in health["error"]
    state.close()


def test_a_process_whose_registry_call_hangs_still_exits():
    # ThreadPoolExecutor's workers are joined at interpreter exit: a router whose registry hung
    # could never exit. The refresh thread is a daemon.
    code = textwrap.dedent(
        """
        import asyncio, threading
        from llama_mapper.serving.routing_state import RoutingState

        class Hung:
            def rollout(self, model):
                threading.Event().wait()
            def champion(self, model, alias):
                return None

        state = RoutingState(Hung(), ["mapper"], "champion", interval_s=1.0, timeout_s=0.1)
        assert asyncio.run(state.refresh()) is False
        print("stale", flush=True)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "stale", proc.stderr[-2000:]


def test_the_daemon_executor_runs_in_order_hands_back_errors_and_refuses_after_shutdown():
    executor = DaemonExecutor("t")
    assert executor.submit(lambda a, b: a + b, 2, b=3).result(timeout=5) == 5
    with pytest.raises(ZeroDivisionError):
        executor.submit(lambda: 1 / 0).result(timeout=5)
    gate, entered = threading.Event(), threading.Event()

    def hold() -> bool:
        entered.set()
        return gate.wait()

    blocked = executor.submit(hold)
    assert entered.wait(5)
    queued = executor.submit(lambda: "never")
    executor.shutdown(wait=False, cancel_futures=True)
    assert queued.cancelled()
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(lambda: None)
    gate.set()
    assert blocked.result(timeout=5) is True
