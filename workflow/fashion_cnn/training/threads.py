"""``engine.shared_cores: adapt``: the number of PyTorch CPU threads chosen, while training, by
measuring the images/s each count gives.

Why (docs/results/notebook.md, "The AVX2 EPYC re-measured with it", "On shared cores"): the threads of one convolution wait for each other
at its end, so when another process keeps one of a 2-core job's cores busy, the thread that
shares that core holds back the one that does not. Measured on three CPU kinds beside one busy
single-threaded process, the chapter's CNN with two threads lost much of its quiet speed and
ran faster with one thread than with two (the same page, "Speed in short"). Which count is faster depends on what the neighbours do and
for how long, so it is measured, not guessed: the training runs at one count for a window of
steps, tries the next count down (or up) for one window, and keeps whichever was faster. A probe
that loses is tried again less and less often (the cost of trying on a quiet machine is about
one window in 32), and at once when the speed drops, as it does when a neighbour starts.

It is opt-in: the number of threads changes the order in which oneDNN sums, so a run whose
neighbours come and go no longer gives the same weights to the last bit as one that keeps its
threads (``keep``, the default).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)

WINDOW_STEPS = 10  # a window is at least this many steps ...
WINDOW_SECONDS = 2.0  # ... and at least this long
SETTLE_STEPS = 2  # steps not timed after a change of threads (the thread pool wakes up)
FIRST_PROBE = 2  # windows measured before the first probe
MOST_PATIENCE = 32  # windows between probes, at most, after probes that lost
MARGIN = 1.05  # a probe must be this much faster to be kept
DROP = 0.8  # a window this much slower than the count's best probes again at once


class ThreadTuner:
    """Call ``step(images)`` after every training step, ``pause()`` and ``resume()`` around
    time that is not training (validation, checkpoints); it calls ``torch.set_num_threads``."""

    def __init__(
        self,
        most: int,
        *,
        window_steps: int | None = None,
        window_seconds: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
        set_threads: Callable[[int], None] | None = None,
    ):
        self.most = most
        self.threads = most
        self.window_steps = WINDOW_STEPS if window_steps is None else window_steps
        self.window_seconds = WINDOW_SECONDS if window_seconds is None else window_seconds
        self.clock = clock
        self.set_threads = set_threads or torch.set_num_threads
        self.probe: int | None = None  # the count being tried, or None
        self.baseline = 0.0  # images/s of self.threads in the last window before a probe
        self.best: dict[int, float] = {}  # the best window seen at each count
        self.patience = FIRST_PROBE
        self.windows = 0  # windows since the last probe
        self.direction = -1  # the next probe: one thread fewer (-1) or more (+1)
        self.changes: list[tuple[int, int, float, float]] = []  # (from, to, rate from, rate to)
        self._first = True  # the first window warms up: not counted
        self.paused_at: float | None = None
        self._restart(settle=0)

    def _restart(self, settle: int) -> None:
        self.settle, self.steps, self.images = settle, 0, 0
        self.started = self.clock()

    def pause(self) -> None:
        """Training stops for a while (validation, checkpoints): that time is not counted."""
        self.paused_at = self.clock()

    def resume(self) -> None:
        if self.paused_at is not None:
            self.started += self.clock() - self.paused_at
            self.paused_at = None

    def step(self, images: int) -> None:
        if self.most < 2:
            return
        if self.settle:
            self.settle -= 1
            if not self.settle:
                self.started = self.clock()
            return
        self.steps += 1
        self.images += images
        elapsed = self.clock() - self.started
        if self.steps < self.window_steps or elapsed < self.window_seconds:
            return
        rate = self.images / elapsed
        if self._first:
            self._first = False
        elif self.probe is None:
            self._measured(rate)
        else:
            self._probed(rate)
        if self.settle == 0:
            self._restart(settle=0)

    def _measured(self, rate: float) -> None:
        best = self.best.get(self.threads, 0.0)
        self.baseline = rate
        self.windows += 1
        if rate < DROP * best:  # slower than this count has been: something changed
            self.patience = FIRST_PROBE
            self.best[self.threads] = rate  # and this is the speed to compare with from now
        else:
            self.best[self.threads] = max(best, rate)
        if self.windows < self.patience:
            return
        probe = self.threads + self.direction
        if not 1 <= probe <= self.most:
            self.direction = -self.direction
            probe = self.threads + self.direction
        self.probe = probe
        self._switch(probe)

    def _probed(self, rate: float) -> None:
        probe, self.probe, self.windows = self.probe, None, 0
        assert probe is not None  # a window is probed only after _measured chose the count
        if rate > MARGIN * self.baseline:
            log.info(
                "shared_cores: adapt: %d PyTorch threads train at %.0f images/s against %.0f "
                "with %d: keeping %d",
                probe,
                rate,
                self.baseline,
                self.threads,
                probe,
            )
            self.changes.append((self.threads, probe, self.baseline, rate))
            self.threads = probe
            self.best[probe] = rate
            self.patience = FIRST_PROBE  # and see whether one more step that way helps
        else:
            log.debug("shared_cores: adapt: %d threads %.0f images/s, no faster", probe, rate)
            self.direction = -self.direction
            self.patience = min(2 * self.patience, MOST_PATIENCE)
            self._switch(self.threads)

    def _switch(self, threads: int) -> None:
        self.set_threads(threads)
        self._restart(settle=SETTLE_STEPS)

    def describe(self) -> str:
        if self.most < 2:
            return "shared_cores: adapt: one thread, nothing to choose"
        if not self.changes:
            return f"shared_cores: adapt: kept {self.threads} threads (no other count was faster)"
        moves = ", ".join(
            f"{a}->{b} ({ra:.0f}->{rb:.0f} images/s)" for a, b, ra, rb in self.changes
        )
        return f"shared_cores: adapt: {self.threads} threads at the end; changes {moves}"
