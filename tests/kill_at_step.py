"""`python tests/kill_at_step.py N ARGS...` runs `aptune ARGS...` and dies with os._exit(1) right after
optimizer step N (its log record and any checkpoint due at it written), the way a killed process
stops: no exception, no clean-up. Tests of resuming run it in a subprocess."""
import os
import sys

from aptune.cli import main
from aptune.engine.train import Trainer


def kill_after(step: int) -> None:
    end_step = Trainer.end_step

    def end_step_then_die(self, *args, **kwargs):
        end_step(self, *args, **kwargs)
        if self.global_step == step:
            sys.stdout.flush()
            os._exit(1)

    Trainer.end_step = end_step_then_die


if __name__ == "__main__":
    kill_after(int(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
