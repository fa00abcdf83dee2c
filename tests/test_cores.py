"""Thread and worker counts follow the cores a job was given, not the node's."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity (Linux)")
def test_a_job_pinned_to_one_core_counts_one_core():
    # as under SLURM's --cpus-per-task=1 or taskset: os.cpu_count() still says the whole machine
    code = ("import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
            "from sic_share._cores import usable_cores; print(usable_cores(), os.cpu_count())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "1"
    assert int(out[1]) == os.cpu_count()
