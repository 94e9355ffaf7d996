"""Where models are looked up by name, without importing torch: the demo and the launch files ask this
before any model is loaded (``engine.stream`` re-exports it and resolves names with it)."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from vidseg_ros.files import file_problem  # noqa: F401  (its home is files.py; the model lookups use it here)

log = logging.getLogger(__name__)

DEFAULT_MODEL = 'camvid_keyframe_fpn'
MODEL_SUFFIXES = ('.pt', '.onnx', '.ts')
UNTRAINED_PREFIX = 'untrained:'
REPO_MODELS = Path(__file__).resolve().parents[2] / 'models'    # a source checkout's (see package_roots)
MODELS_ENV = 'VIDSEG_MODELS'
_WARNED_ENV_DIRS: set[Path] = set()    # $VIDSEG_MODELS entries already warned about: once per process


def package_roots() -> list[Path]:
    """Folders that hold this package's shipped files (package.xml, config/, models/), first match wins:

    1. the source checkout this package is imported from;
    2. the ament share dir (colcon install, or a venv on ``AMENT_PREFIX_PATH``);
    3. ``<sys.prefix>/share/vidseg_ros`` (pip install into a venv, activated or not) and the ``--user`` one;
    4. the prefix this package is installed under (``<prefix>/lib/python3.X/site-packages``): ``pip install
       --prefix P``, or Debian's pip, which puts it under /usr/local while sys.prefix is /usr (ROS images).
    """
    import site
    roots = [REPO_MODELS.parent] if (REPO_MODELS.parent / 'package.xml').is_file() else []  # not site-packages
    try:
        from ament_index_python.packages import get_package_share_directory
        roots.append(Path(get_package_share_directory('vidseg_ros')))
    except Exception:  # noqa: BLE001 - not on an ament prefix (or ament_index missing)
        pass
    roots += [Path(prefix) / 'share' / 'vidseg_ros'
              for prefix in (sys.prefix, getattr(site, 'USER_BASE', None) or sys.prefix)]
    if (installed := _install_share(Path(__file__).resolve())) is not None:
        roots.append(installed)
    return list(dict.fromkeys(roots))


def _install_share(module: Path) -> Path | None:
    """``<prefix>/share/vidseg_ros`` for this module at ``<prefix>/lib*/python3*/{site,dist}-packages/vidseg_ros/
    engine/``, when it holds package.xml (shipped models were "not found" after ``pip install --prefix``)."""
    parents = module.parents
    if len(parents) < 6 or not parents[4].name.startswith('lib') or not parents[3].name.startswith('python'):
        return None
    share = parents[5] / 'share' / 'vidseg_ros'
    return share if (share / 'package.xml').is_file() else None


def model_dirs() -> list[Path]:
    """Where bare model names are looked up, first match wins; the same for the node and ``vidseg``:
    ``$VIDSEG_MODELS`` (folders separated by ``os.pathsep``: the user's own models), then the ``models/`` of
    each ``package_roots`` folder."""
    dirs = [Path(d).expanduser() for d in os.environ.get(MODELS_ENV, '').split(os.pathsep) if d]
    # a typo there was ignored without a word (until a name was not found): one warning, once per process
    unusable = [f'{d} ({why})' for d in dirs if d not in _WARNED_ENV_DIRS and (why := not_a_folder(d))]
    if unusable:
        _WARNED_ENV_DIRS.update(d for d in dirs if not_a_folder(d))
        log.warning('$%s lists %s: no models are looked up there', MODELS_ENV, ', '.join(unusable))
    return list(dict.fromkeys(dirs + [root / 'models' for root in package_roots()]))


def not_a_folder(path: Path) -> str:
    """Why a model folder holds no models: 'missing' or 'not a folder'; '' for a folder."""
    if path.is_dir():
        return ''
    return 'not a folder' if path.exists() else 'missing'
