"""A process that goes when its parent goes (Linux prctl PR_SET_PDEATHSIG). Standard library only, so the
node entry can call it before any heavy import; the data loop's pool workers call it too."""
from __future__ import annotations

import sys


def die_with_parent(sig: int) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies; False where that cannot be asked (not
    Linux, no prctl). Strictly: when the parent's *thread* that started this process ends, so start processes
    from a thread that lives as long as they should (the main thread). A parent dead before this call sends
    nothing: a caller that must not outlive it checks ``os.getppid()`` afterwards."""
    if not sys.platform.startswith('linux'):
        return False
    import ctypes
    pr_set_pdeathsig = 1
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(sig)) == 0
    except (OSError, AttributeError):
        return False
