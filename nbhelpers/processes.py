"""Stopping a child process and everything it started.

papermill starts its Jupyter kernel with `start_new_session=True` (jupyter_client does, so that a terminal's Ctrl-C
does not reach kernels), so killing papermill's process group leaves the kernel running as an orphan that finishes
the notebook on its own. The process tree is walked instead, with psutil (already installed: ipykernel needs it).
"""

from __future__ import annotations


def stop_tree(pid: int, wait: float = 10.0) -> None:
    """Kill `pid` and all its descendants, children first seen, then wait for them to go."""
    import psutil

    try:
        root = psutil.Process(pid)
        tree = root.children(recursive=True) + [root]
    except psutil.NoSuchProcess:
        return
    for process in tree:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(tree, timeout=wait)
