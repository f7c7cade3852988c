"""engine.shared_cores: adapt (fashion_cnn.training.threads): the thread count chosen while training.

The choice is driven by measured images/s, which on a real machine depend on what its neighbours
do; these tests give the tuner a simulated machine instead (a clock that advances by each step's
time at the current thread count), so that each situation is the same on every run. The real
speeds it chooses between are measured by the benchmark (`--switches channels_last+adapt
--contention spin`; docs/results/notebook.md), not asserted here. The last test runs the real engine
with it, real threads included.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import tiny_training_job
from fashion_cnn.training import threads as threads_module
from fashion_cnn.training.device import usable_cpus
from fashion_cnn.training.engine import train_model
from fashion_cnn.training.threads import MOST_PATIENCE, ThreadTuner

BATCH = 64


class Machine:
    """Images/s per thread count (which may change at a given step); counts its steps."""

    def __init__(self, rates: dict[int, float], most: int = 2):
        self.rates, self.threads, self.now, self.steps = rates, most, 0.0, 0
        self.at: list[int] = []  # the thread count of every step

    def set_threads(self, count: int) -> None:
        self.threads = count

    def clock(self) -> float:
        return self.now

    def run(self, tuner: ThreadTuner, steps: int) -> None:
        for _ in range(steps):
            self.now += BATCH / self.rates[self.threads]
            self.at.append(self.threads)
            self.steps += 1
            tuner.step(BATCH)


def tuner_for(machine: Machine, most: int = 2) -> ThreadTuner:
    return ThreadTuner(most, clock=machine.clock, set_threads=machine.set_threads)


def test_beside_a_busy_neighbour_it_moves_to_the_faster_count():
    """Two threads at 3,941 images/s, one at 5,178 (the AMX Xeon beside a busy loop): one."""
    machine = Machine({2: 3941, 1: 5178})
    tuner = tuner_for(machine)
    machine.run(tuner, 10_000)
    assert tuner.threads == 1 and machine.threads == 1
    assert tuner.changes and tuner.changes[0][:2] == (2, 1)
    assert machine.at.index(1) < 1000  # within a few windows of 2 s
    assert machine.at[-5000:].count(1) > 0.93 * 5000  # and stays, trying two now and then
    assert "2->1" in tuner.describe()


def test_on_a_quiet_machine_it_keeps_its_threads_and_probes_less_and_less():
    machine = Machine({2: 5479, 1: 4100})
    tuner = tuner_for(machine)
    machine.run(tuner, 20_000)
    assert tuner.threads == 2 and machine.threads == 2 and not tuner.changes
    assert tuner.patience == MOST_PATIENCE
    assert machine.at.count(1) / len(machine.at) < 0.05  # trying costs under 5% of the steps
    assert "kept 2 threads" in tuner.describe()


def test_a_neighbour_that_starts_later_is_noticed_at_once():
    """After a long quiet stretch the probes are rare; a drop in speed brings one on at once."""
    machine = Machine({2: 5479, 1: 4100})
    tuner = tuner_for(machine)
    machine.run(tuner, 20_000)
    assert tuner.patience == MOST_PATIENCE
    machine.rates = {2: 2500, 1: 4000}  # the neighbour arrives
    start = machine.steps
    machine.run(tuner, 2000)
    switched = start + machine.at[start:].index(1)
    # a window is 2 s (at most ~80 steps at these speeds): noticed within a few windows
    assert switched - start < 400
    assert tuner.threads == 1


def test_a_neighbour_that_slows_every_count_alike_is_probed_rarely_after_the_first_look():
    """A second training job: two threads stay the faster, both slower than before. After one
    look at one thread, the tries become rare again (not a try every other window)."""
    machine = Machine({2: 5479, 1: 4100})
    tuner = tuner_for(machine)
    machine.run(tuner, 20_000)
    machine.rates = {2: 3774, 1: 2700}
    start = machine.steps
    machine.run(tuner, 20_000)
    assert tuner.threads == 2 and not tuner.changes
    assert 1 in machine.at[start : start + 1000]  # it looked at once
    assert machine.at[start:].count(1) / 20_000 < 0.05


def test_a_neighbour_that_leaves_gives_the_threads_back():
    machine = Machine({2: 2500, 1: 4000})
    tuner = tuner_for(machine)
    machine.run(tuner, 2000)
    assert tuner.threads == 1
    machine.rates = {2: 5479, 1: 4100}
    machine.run(tuner, 20_000)
    assert tuner.threads == 2
    assert [change[:2] for change in tuner.changes] == [(2, 1), (1, 2)]


def test_many_cores_step_down_one_thread_at_a_time_and_stop_at_the_best():
    """16 cores, one of them busy: 15 threads is the fastest; both 16 and 14 are slower."""
    rates = {n: 1000.0 * n for n in range(1, 16)} | {16: 9000.0}
    machine = Machine(rates, most=16)
    tuner = tuner_for(machine, most=16)
    machine.run(tuner, 5000)
    assert tuner.threads == 15


def test_time_between_pause_and_resume_is_not_counted():
    """Validation and checkpoints between epochs must not count against the thread count that
    happened to run before them."""
    machine = Machine({2: 5000, 1: 4000})
    tuner = tuner_for(machine)
    for _ in range(200):
        machine.run(tuner, 5)
        tuner.pause()
        machine.now += 30.0  # a long validation pass
        tuner.resume()
    assert tuner.threads == 2 and not tuner.changes


def test_one_thread_has_nothing_to_choose():
    machine = Machine({1: 1000}, most=1)
    tuner = tuner_for(machine, most=1)
    machine.run(tuner, 1000)
    assert machine.at == [1] * 1000 and "nothing to choose" in tuner.describe()


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.skipif(usable_cpus()[0] < 2, reason="needs two CPUs to choose between")
def test_the_engine_adapts_its_real_threads_and_says_so(
    tmp_path, prepared_data, monkeypatch, caplog, restore_threads
):
    """shared_cores: adapt through the real training loop: the tuner gets every step, sets
    PyTorch's real thread count (windows of one step, so it probes within a few steps) and the
    log says what it kept; keep (the default) never changes the job's threads."""
    monkeypatch.setattr(threads_module, "WINDOW_STEPS", 1)
    monkeypatch.setattr(threads_module, "WINDOW_SECONDS", 0.0)
    seen = []
    real = torch.set_num_threads
    monkeypatch.setattr(
        threads_module.torch, "set_num_threads", lambda n: (seen.append(n), real(n))[1]
    )
    job = tiny_training_job(tmp_path, prepared_data, threads=2, train_subset=640, epochs=2)
    adapt = dataclasses.replace(job, engine=job.engine.replace(shared_cores="adapt"))
    with caplog.at_level("INFO", logger="fashion_cnn.training.engine"):
        train_model(adapt)
    assert 1 in seen  # one thread was tried
    assert torch.get_num_threads() in (1, 2)
    assert any(r.getMessage().startswith("shared_cores: adapt: ") for r in caplog.records)

    seen.clear()
    caplog.clear()
    (tmp_path / "keep").mkdir()
    keep = tiny_training_job(tmp_path / "keep", prepared_data, threads=2, train_subset=640)
    with caplog.at_level("INFO", logger="fashion_cnn.training.engine"):
        train_model(keep)
    assert torch.get_num_threads() == 2
    assert not any("shared_cores" in r.getMessage() for r in caplog.records)
