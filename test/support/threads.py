"""Running a call in a thread of its own (the engine's run-time settings must reach its worker thread)."""
import threading


def in_thread(fn):
    """``fn()`` run in a new thread; its result."""
    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join()
    return out[0]
