"""Training: the one loop every experiment goes through, its batch sources, losses, optimizers
and schedules, the device and speed switches, CUDA graphs and CPU threads.

May import: ``core``, ``config``, ``data``, ``models``.
"""
