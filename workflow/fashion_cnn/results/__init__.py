"""Results over runs: replicates over seeds, comparisons between experiments, sweeps' tables, the
summary, and the statistics and tables they share.

May import: every stage below it (``core`` to ``evaluation``). ``summary``, ``tables``, ``stats``
and ``comparisons`` import no torch (tests/test_layout.py holds both).
"""
