import os
import sys

import fashion_cnn
from fashion_cnn.config import waiting

# The environment the user's shell gave, before the lines below: the benchmark runs the chapter's
# loop in it, as the chapter's readers run their script (tools/benchmark/measure.py).
fashion_cnn.USER_ENVIRONMENT = dict(os.environ)

# OpenMP's wait policy, chosen before torch loads its OpenMP runtime (which reads it once): a
# training job whose cores are its own keeps OpenMP's default (idle threads spin a while:
# faster on quiet cores), one on shared cores, and every short command, makes idle threads sleep
# at once (spinning beside other processes had cut a job to a tenth of its speed). The choice
# and its reason are logged (config/waiting.py; measured: docs/results/speed.md).
policy, fashion_cnn.WAIT_POLICY_REASON = waiting.choose(sys.argv[1:], os.environ)
if policy is not None:
    os.environ["OMP_WAIT_POLICY"] = policy

from fashion_cnn.cli import main  # noqa: E402

main()
