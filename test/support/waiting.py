"""Time in tests: a fake clock advanced explicitly, and waits that end as soon as a condition holds."""
import time


class FakeClock:
    """A ``time.monotonic`` stand-in that moves only when the test calls :meth:`advance`."""

    def __init__(self, start: float = 1000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def wait_until(condition, timeout: float = 30.0, what: str = 'condition', poll_s: float = 0.01) -> None:
    """Poll ``condition()`` until true; fail after ``timeout`` s (generous: the machine may be loaded)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f'timed out after {timeout:.0f} s waiting for {what}'
        time.sleep(poll_s)
