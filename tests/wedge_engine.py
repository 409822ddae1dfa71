"""Test-only: a worker started with `-I wedge_engine` gets engines whose decode steps block while the
file named by WEDGE_FLAG exists, as a wedged engine would (a hung kernel, a deadlocked library).

Production workers never import this module.
"""
import os
import time

from engines.llamacpp_engine import LlamaCppEngine
from engines.mlx_engine import MLXEngine


def _wedged(step):
    def step_unless_wedged(self, *args, **kwargs):
        while os.path.exists(os.environ["WEDGE_FLAG"]):
            time.sleep(0.05)
        return step(self, *args, **kwargs)

    return step_unless_wedged


for engine_class in (LlamaCppEngine, MLXEngine):
    engine_class._step = _wedged(engine_class._step)
