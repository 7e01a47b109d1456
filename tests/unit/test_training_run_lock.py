"""One job per run directory: a second job of the same name is refused while the first runs."""

from __future__ import annotations

import multiprocessing

import pytest

from llama_mapper.domain.errors import FailedPrecondition
from llama_mapper.training.job import exclusive_run


def _hold(directory, ready, release):
    with exclusive_run(directory):
        ready.set()
        release.wait(30)


def test_a_second_job_of_the_same_name_is_refused_while_the_first_runs(tmp_path):
    directory = tmp_path / "runs" / "mapper-cpu"
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    first = ctx.Process(target=_hold, args=(directory, ready, release))
    first.start()
    try:
        assert ready.wait(30)
        with pytest.raises(FailedPrecondition) as refused, exclusive_run(directory):
            pass
        message = str(refused.value)
        assert "'mapper-cpu' is already running" in message and f"pid {first.pid}" in message
        assert "another `name`" in message
    finally:
        release.set()
        first.join(30)
    # Released when the first ends (a job that dies releases it too: the lock is the process's).
    with exclusive_run(directory):
        pass


def test_the_lock_is_released_when_the_job_raises(tmp_path):
    with pytest.raises(RuntimeError), exclusive_run(tmp_path / "run"):
        raise RuntimeError("training failed")
    with exclusive_run(tmp_path / "run"):
        assert (tmp_path / "run" / ".run.lock").read_text().startswith("pid ")
