"""Tools for people who measure the workflow: the ``benchmark`` command (the chapter's loop against
the engine) and the profiler of one training step.

May import: every stage (``core`` to ``results``).
"""
