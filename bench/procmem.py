"""Peak resident memory of a process and all its descendants (the Spark JVM included), from /proc."""

from __future__ import annotations

import os
import subprocess
import threading
import time


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(entry))
    return tree


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def tree_rss(root: int) -> int:
    tree, total, stack = _children(), 0, [root]
    while stack:
        pid = stack.pop()
        total += _rss_bytes(pid)
        stack.extend(tree.get(pid, []))
    return total


def _status_kib(pid: int, keys: tuple[str, ...]) -> dict[str, int]:
    try:
        with open(f"/proc/{pid}/status") as f:
            found = {line.split(":")[0]: int(line.split()[1]) for line in f if line.startswith(keys)}
    except (OSError, IndexError, ValueError):
        return {}
    return found


def tree_memory(root: int) -> dict[str, int]:
    """Bytes resident in a process tree: `anon` (private: heaps, copies; what a memory limit must
    hold) and `file` (mapped files: page cache, shared between processes and reclaimed under
    pressure), each summed over the processes."""
    tree, totals, stack = _children(), {"anon": 0, "file": 0}, [root]
    while stack:
        pid = stack.pop()
        status = _status_kib(pid, ("RssAnon", "RssFile"))
        totals["anon"] += status.get("RssAnon", 0) << 10
        totals["file"] += status.get("RssFile", 0) << 10
        stack.extend(tree.get(pid, []))
    return totals


class PeakMemory:
    """Samples `tree_memory(root)` every `every_s` while in the with-block: the peak of each part
    and of the largest single process's anonymous memory."""

    def __init__(self, root: int, every_s: float = 0.25) -> None:
        self.root, self.every_s = root, every_s
        self.peak = {"anon": 0, "file": 0, "largest_process_anon": 0}
        self._done = threading.Event()

    def _sample(self) -> None:
        while not self._done.is_set():
            parts = tree_memory(self.root)
            tree, stack, largest = _children(), [self.root], 0
            while stack:
                pid = stack.pop()
                largest = max(largest, _status_kib(pid, ("RssAnon",)).get("RssAnon", 0) << 10)
                stack.extend(tree.get(pid, []))
            for key, value in (*parts.items(), ("largest_process_anon", largest)):
                self.peak[key] = max(self.peak[key], value)
            self._done.wait(self.every_s)

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()


def run_measured(cmd: list[str], **kwargs) -> tuple[subprocess.CompletedProcess, float, int]:
    """Run a command; return (result, wall seconds, peak RSS of its process tree in bytes)."""
    peak = 0
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss(proc.pid))
            done.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), seconds, peak
