"""`make test` runs on pytest-xdist workers, which send every test's report to the controller as UTF-8."""
import os
import subprocess
import sys

import pytest
from support.paths import ROOT

SAMPLE = ROOT / 'test' / 'support' / 'surrogate_report_sample.py'


def test_a_non_utf8_name_in_a_report_does_not_end_the_run(tmp_path):
    """A passing test whose captured log held a non-UTF-8 file name (test_non_utf8_paths) ended the whole run in
    an INTERNALERROR, every test after it unrun: the worker could not send its report."""
    pytest.importorskip('xdist')
    env = {k: v for k, v in os.environ.items() if not k.startswith('PYTEST_XDIST')}   # a run of its own
    r = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-n', '1',
                        '--basetemp', str(tmp_path / 'run'), str(SAMPLE)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and '1 failed, 1 passed' in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    assert 'INTERNALERROR' not in r.stdout and "AssertionError: caf\\udce9" in r.stdout, r.stdout[-3000:]
