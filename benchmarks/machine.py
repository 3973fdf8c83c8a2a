"""What the benchmarks say about the machine and the code they ran on."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> str:
    """This machine and the versions that compute: 'AMD EPYC, 2 cores, Python 3.11.7, NumPy 2.4.6'."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu_name()}, {cores} cores, Python {platform.python_version()}, NumPy {np.__version__}"


def commit() -> str | None:
    """The checkout's short commit, marked when the package or the benchmarks (results apart) differ from it."""
    git = ["git", "-C", str(ROOT)]
    try:
        head = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(git + ["status", "--porcelain", "--", "tinytransformer", "benchmarks",
                                      ":!benchmarks/results"], capture_output=True, text=True)
    except OSError:
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + (" (+ uncommitted changes)" if dirty.stdout.strip() else "")


def stated(machine: str, measured_at: str | None) -> str:
    """The first line of every results table: the machine and versions, and the commit measured.

    ``machine`` names the CPU and the versions (Python, NumPy, ...); a commit an older result did
    not record is said to be missing, never guessed.
    """
    return f"Measured on {machine}; commit {measured_at or 'not recorded in the results'}."
