"""A ``torchstn`` entry point for the torchrun tests, with faults injected from the environment.

``FAULT_KILL_AT_STEP=N``: on the first attempt (``TORCHELASTIC_RESTART_COUNT`` 0), rank
``FAULT_RANK`` (default 1) sends itself SIGKILL just before its N-th optimisation step, as a
crashed or pre-empted worker would die. ``FAULT_SLOW_RANK=R``: rank R sleeps ``FAULT_SLEEP``
seconds (default 0.05) before every step, so the ranks' clocks disagree. ``FAULT_NAN_AT_STEP=N``:
rank ``FAULT_RANK`` feeds NaN images to its N-th step, so its loss alone is NaN.
``FAULT_RECORD_READS=DIR``: every image file a rank decodes (in its DataLoader workers too) is
appended to ``DIR/rank<R>.txt``.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from torchstn.cli import main
from torchstn.train import Trainer

rank = int(os.environ.get("RANK", "0"))
first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
kill_at = int(os.environ.get("FAULT_KILL_AT_STEP", "0"))
slow_rank = int(os.environ.get("FAULT_SLOW_RANK", "-1"))
nan_at = int(os.environ.get("FAULT_NAN_AT_STEP", "0"))
original = Trainer._step
calls = [0]


def faulty_step(self, *args):
    calls[0] += 1
    if kill_at and first_attempt and rank == int(os.environ.get("FAULT_RANK", "1")):
        if calls[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    if nan_at and calls[0] == nan_at and rank == int(os.environ.get("FAULT_RANK", "1")):
        x, *rest = args
        args = (x * float("nan"), *rest)
    if rank == slow_rank:
        time.sleep(float(os.environ.get("FAULT_SLEEP", "0.05")))
    return original(self, *args)


def recording_getitem(self, index):
    item = original_getitem(self, index)
    with open(os.path.join(os.environ["FAULT_RECORD_READS"], f"rank{rank}.txt"), "a") as fh:
        fh.write(self.entries[item[2]].path.as_posix() + "\n")
    return item


if __name__ == "__main__":
    Trainer._step = faulty_step
    if os.environ.get("FAULT_RECORD_READS"):
        from torchstn.data.files import ImageFiles

        original_getitem = ImageFiles.__getitem__
        ImageFiles.__getitem__ = recording_getitem
    sys.exit(main(sys.argv[1:]))
