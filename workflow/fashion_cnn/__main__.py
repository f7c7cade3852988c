import os

import fashion_cnn

# The environment the user's shell gave, before the line below: the benchmark runs the chapter's
# loop in it, as the chapter's readers run their script (tools/benchmark/measure.py).
fashion_cnn.USER_ENVIRONMENT = dict(os.environ)

# OpenMP threads that find no work wait passively instead of spinning. Set before torch loads its
# OpenMP runtime, and only where the user has not chosen: on cores shared with other processes,
# spinning threads took the time slices their partners needed, and a two-thread training job
# ran at a fraction of its speed (docs/results/notebook.md, "Speed in short"). On quiet cores
# it costs the engine speed against OpenMP's default policy (docs/results/speed.md has both).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from fashion_cnn.cli import main  # noqa: E402

main()
