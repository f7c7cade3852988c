"""Training: the one loop every experiment goes through (``engine``), setting up a run
(``run``) and saving and resuming its state (``resume``), the training methods the loop asks
for their batches, loss and figures (``methods``: supervised, FixMatch), batch sources,
losses, optimizers and schedules, the device and speed switches, CUDA graphs and CPU threads.

May import: ``core``, ``config``, ``data``, ``models``.
"""
