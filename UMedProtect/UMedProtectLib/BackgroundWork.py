"""Long work off the GUI thread: a worker thread reports progress through a queue and stops on Cancel.

Work is a function ``work(progress, cancelled)`` that touches no MRML, VTK or Qt object (numpy and
the product only): ``progress(fraction, message)`` reports, ``cancelled()`` says whether to stop
(the product raises ``umedprotect.errors.Cancelled`` then). A *runner* runs it and returns its
result: :class:`DirectRunner` in the calling thread (batch mode, tests), :class:`DialogRunner` on a
worker thread behind a modal progress dialog.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from umedprotect.errors import Cancelled

T = TypeVar("T")
ProgressCallback = Callable[[float, str], None]  # (fraction done 0..1, message)
CancelCheck = Callable[[], bool]
Work = Callable[[ProgressCallback, CancelCheck], T]
Runner = Callable[[str, Work], Any]  # (title, work) -> work's result


def _ignoreProgress(fraction: float, message: str) -> None:
    pass


def _neverCancelled() -> bool:
    return False


class DirectRunner:
    """Runs work in the calling thread, with optional progress and cancel callbacks."""

    def __init__(self, progress: ProgressCallback | None = None, cancelled: CancelCheck | None = None) -> None:
        self.progress = progress or _ignoreProgress
        self.cancelled = cancelled or _neverCancelled

    def __call__(self, title: str, work: Work[T]) -> T:
        return work(self.progress, self.cancelled)


class BackgroundTask:
    """One piece of work on a worker thread; its owner polls it from its own thread."""

    def __init__(self, work: Work) -> None:
        self._work = work
        self._reports: queue.SimpleQueue[tuple[float, str]] = queue.SimpleQueue()
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name="UMedProtect work", daemon=True)
        self._result: Any = None
        self._error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        """Ask the work to stop at its next check."""
        self._cancel.set()

    @property
    def cancelRequested(self) -> bool:
        return self._cancel.is_set()

    def wait(self, seconds: float | None = None) -> bool:
        """Wait up to ``seconds`` for the work to end; True when it has."""
        self._thread.join(seconds)
        return not self._thread.is_alive()

    def reports(self) -> list[tuple[float, str]]:
        """Progress reported since the last call, oldest first."""
        reports = []
        while not self._reports.empty():
            reports.append(self._reports.get_nowait())
        return reports

    def result(self) -> Any:
        """The work's result; raises its error, or :class:`Cancelled` when Cancel was asked for."""
        if self._thread.is_alive():
            raise RuntimeError("the work has not finished")
        if self._error is not None:
            raise self._error
        if self.cancelRequested:  # finished after Cancel was pressed: its result is dropped all the same
            raise Cancelled("cancelled")
        return self._result

    def _run(self) -> None:
        try:
            self._result = self._work(
                lambda fraction, message: self._reports.put((fraction, message)), self._cancel.is_set
            )
        except BaseException as error:  # noqa: BLE001 - handed to the owner's thread by result()
            self._error = error


class ProgressView(Protocol):
    """What :class:`DialogRunner` needs of a progress dialog."""

    def show(self, fraction: float, message: str) -> None: ...

    def cancelled(self) -> bool: ...

    def processEvents(self) -> None: ...

    def close(self) -> None: ...


class DialogRunner:
    """Runs work on a worker thread while a modal progress view is shown; the view's Cancel stops it."""

    def __init__(self, makeView: Callable[[str], ProgressView], pollSeconds: float = 0.05) -> None:
        self.makeView = makeView
        self.pollSeconds = pollSeconds

    def __call__(self, title: str, work: Work[T]) -> T:
        view = self.makeView(title)
        task = BackgroundTask(work)
        finished = False
        try:
            task.start()
            while True:
                finished = task.wait(self.pollSeconds)
                for fraction, message in task.reports():
                    view.show(fraction, message)
                if finished:
                    break
                if view.cancelled() and not task.cancelRequested:
                    task.cancel()
                view.processEvents()
        finally:
            if not finished:  # the loop failed: stop the work rather than leave it running unseen
                task.cancel()
            view.close()
        return task.result()
