"""BackgroundWork: work on a worker thread, progress in order, Cancel, errors handed back (no Slicer, no Qt)."""

from __future__ import annotations

import threading

import pytest

from umedprotect.errors import Cancelled, InputError
from UMedProtectLib.BackgroundWork import BackgroundTask, DialogRunner, DirectRunner


class FakeView:
    """A progress dialog that records what it was shown and presses Cancel after ``cancelAfter`` reports."""

    def __init__(self, cancelAfter: int | None = None) -> None:
        self.cancelAfter = cancelAfter
        self.shown: list[tuple[float, str]] = []
        self.closed = False
        self.events = 0

    def show(self, fraction: float, message: str) -> None:
        self.shown.append((fraction, message))

    def cancelled(self) -> bool:
        return self.cancelAfter is not None and len(self.shown) >= self.cancelAfter

    def processEvents(self) -> None:
        self.events += 1

    def close(self) -> None:
        self.closed = True


def steps(count: int, gate: threading.Event | None = None):
    """Work reporting ``count`` steps (each after ``gate`` is set, when given) and checking Cancel between them."""

    def work(progress, cancelled):
        for step in range(count):
            if gate is not None:
                gate.wait(5)
            if cancelled():
                raise Cancelled("stopped")
            progress(step / count, f"step {step}")
        return threading.get_ident()

    return work


def test_work_runs_on_another_thread_and_the_view_sees_every_report_in_order():
    view = FakeView()
    worker = DialogRunner(lambda title: view, pollSeconds=0.001)("title", steps(5))
    assert worker != threading.get_ident()
    assert view.shown == [(k / 5, f"step {k}") for k in range(5)]
    assert view.closed


def test_cancel_stops_the_work_and_raises_cancelled():
    view = FakeView(cancelAfter=1)
    reached = []

    def work(progress, cancelled):
        progress(0.0, "first")
        for _ in range(500):  # until the runner has seen the report and asked to stop
            if cancelled():
                raise Cancelled("stopped")
            threading.Event().wait(0.01)
        reached.append("end")
        return "result"

    with pytest.raises(Cancelled):
        DialogRunner(lambda title: view, pollSeconds=0.001)("title", work)
    assert reached == [] and view.closed


def test_a_result_that_arrives_after_cancel_is_dropped():
    task = BackgroundTask(lambda progress, cancelled: "finished anyway")
    task.cancel()
    task.start()
    assert task.wait(5)
    with pytest.raises(Cancelled):
        task.result()


def test_errors_of_the_work_reach_the_caller_and_the_view_closes():
    view = FakeView()

    def work(progress, cancelled):
        raise InputError("bad input", option="epsilon")

    with pytest.raises(InputError, match="bad input") as raised:
        DialogRunner(lambda title: view, pollSeconds=0.001)("title", work)
    assert raised.value.option == "epsilon" and view.closed


def test_a_failing_view_cancels_the_work_instead_of_leaving_it_running():
    gate = threading.Event()
    seen = []

    class BrokenView(FakeView):
        def processEvents(self) -> None:
            raise RuntimeError("dialog gone")

    def work(progress, cancelled):
        gate.wait(5)
        seen.append(cancelled())
        return "done"

    runner = DialogRunner(lambda title: BrokenView(), pollSeconds=0.001)
    with pytest.raises(RuntimeError, match="dialog gone"):
        runner("title", work)
    gate.set()
    for thread in threading.enumerate():
        if thread.name == "UMedProtect work":
            thread.join(5)
    assert seen == [True]


def test_direct_runner_runs_in_the_calling_thread_with_its_callbacks():
    reports = []
    assert DirectRunner(lambda f, m: reports.append(m))("title", steps(2)) == threading.get_ident()
    assert reports == ["step 0", "step 1"]
    with pytest.raises(Cancelled):
        DirectRunner(cancelled=lambda: True)("title", steps(2))
