"""Where things are: the checkout, and the shared data (read in place, never copied into the repo)."""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get('VIDSEG_DATA', ROOT.parent / 'shared' / 'data'))
