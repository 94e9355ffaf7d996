"""The package as pip distributes it: the wheel and the sdist, built from a copy of the tree (never in the
checkout, where others build too), what they hold and what they declare.

test_packaging.py checks installed prefixes (pip into the venv, colcon); test/ros/test_installed.py runs
an installed wheel outside the repo.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = 'vidseg_ros'
NODES = ['segment_node', 'segment_lifecycle_node', 'recorder_node', 'video_source_node']
# imported, but from no PyPI package: a ROS install or ../shared/ros2_extras (launch files and tools/docs only)
NOT_ON_PYPI = {'launch', 'launch_ros'}
# imported only when the user asks for it, with a one-line message naming the package (models/encoder.py)
ON_REQUEST = {'timm'}
# the standard library of a later Python (data/bags/foreign.py: compression.zstd on 3.14, backports.zstd before)
LATER_STDLIB = {'compression'}


def tracked_files(root: Path = ROOT) -> list[str]:
    files = subprocess.run(['git', 'ls-files'], cwd=root, capture_output=True, text=True, check=True).stdout
    return [f for f in files.splitlines() if (root / f).is_file()]   # a file deleted, not yet committed: gone


def copy_tree(dest: Path, skip=()) -> Path:
    """The checkout's tracked files (as they are in the working tree) under ``dest``."""
    for f in tracked_files():
        if f.startswith(('test/', '.ci/', *skip)):
            continue
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dest / f)
    return dest


def build_wheel(src: Path, out: Path) -> Path:
    r = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation',
                        '-w', str(out), str(src)], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    return next(out.glob('*.whl'))


def canonical(name: str) -> str:
    return re.sub(r'[-_.]+', '-', name).lower()


def requirement_name(spec: str) -> str:
    return canonical(re.match(r'\s*([A-Za-z0-9][A-Za-z0-9._-]*)', spec).group(1))


@pytest.fixture(scope='module')
def tree(tmp_path_factory) -> Path:
    return copy_tree(tmp_path_factory.mktemp('tree') / PKG)


@pytest.fixture(scope='module')
def wheel(tree, tmp_path_factory) -> zipfile.ZipFile:
    with zipfile.ZipFile(build_wheel(tree, tmp_path_factory.mktemp('wheel'))) as z:
        yield z


def info(wheel: zipfile.ZipFile, name: str) -> str:
    """A file of the wheel's .dist-info (whatever the version)."""
    return wheel.read(next(n for n in wheel.namelist() if re.fullmatch(rf'{PKG}-[^/]+\.dist-info/{name}', n))).decode()


def data_prefix(wheel: zipfile.ZipFile) -> str:
    return next(n for n in wheel.namelist() if '.data/data/' in n).split('data/data/')[0] + 'data/data/'


def metadata(wheel: zipfile.ZipFile) -> dict[str, set[str]]:
    """Requires-Dist of the wheel: {'': core names, extra: names}."""
    text = info(wheel, 'METADATA')
    declared: dict[str, set[str]] = {'': set()}
    for line in text.splitlines():
        if line.startswith('Requires-Dist:'):
            spec = line.split(':', 1)[1]
            extra = re.search(r'extra\s*==\s*"([^"]+)"', spec)
            declared.setdefault(extra.group(1) if extra else '', set()).add(requirement_name(spec))
    return declared


def with_dependencies(names: set[str]) -> set[str]:
    """``names`` and what they require in turn, as installed here (rcl_interfaces comes with ros-rclpy)."""
    found, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo += [requirement_name(r) for r in requires if 'extra ==' not in r]
    return found


def imports(path: Path) -> list[tuple[str, bool]]:
    """(top-level module, imported at module scope) for each absolute import of a third-party module."""
    tree = ast.parse(path.read_text())
    at_top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split('.')[0]
            if top not in sys.stdlib_module_names and top != PKG:
                found.append((top, id(node) in at_top))
    return found


def test_wheel_holds_every_module_and_run_time_file(tree, wheel):
    names, data = set(wheel.namelist()), data_prefix(wheel)
    sources = {f for f in tracked_files() if f.startswith(f'{PKG}/') and f.endswith('.py')}
    assert {n for n in names if n.startswith(f'{PKG}/')} == sources
    shipped = [f for f in tracked_files() if f.startswith(('launch/', 'config/', 'models/'))] + ['package.xml']
    missing = [f for f in shipped if f'{data}share/{PKG}/{f}' not in names]
    assert not missing, f'not in the wheel: {missing}'
    assert f'{data}share/ament_index/resource_index/packages/{PKG}' in names
    # the licence setup.py and package.xml declare travels with the code (there was no LICENSE file)
    assert any(n.endswith('.dist-info/licenses/LICENSE') for n in names)
    for n in NODES:     # `ros2 run` and launch_ros run lib/<pkg>/<node>: executable
        mode = wheel.getinfo(f'{data}lib/{PKG}/{n}').external_attr >> 16
        assert mode & 0o111, f'lib/{PKG}/{n} is not executable in the wheel ({oct(mode)})'
    scripts = info(wheel, 'entry_points.txt')
    for name in [*NODES, 'vidseg']:
        target = re.search(rf'^{name} = ([\w.]+):(\w+)$', scripts, re.M)
        assert target, f'no console script {name}'
        module = tree / (target.group(1).replace('.', '/') + '.py')
        functions = {n.name for n in ast.parse(module.read_text()).body if isinstance(n, ast.FunctionDef)}
        assert target.group(2) in functions, f'{name} -> {target.group(0)}: no such function'


def test_wheel_declares_what_the_code_imports(tree, wheel):
    """Every third-party package the code imports is a requirement (or an extra's); one imported at module scope
    outside ros/ (so by `vidseg` or the core library) is a core requirement. The wheel declared only setuptools:
    `pip install vidseg_ros-*.whl` into a fresh venv and `vidseg --help` ended in "No module named 'typer'"."""
    declared = metadata(wheel)
    core = with_dependencies(declared[''])
    anywhere = with_dependencies(set().union(*declared.values()))
    providers = importlib.metadata.packages_distributions()
    problems = []
    for path in sorted((tree / PKG).rglob('*.py')):
        where = path.relative_to(tree).as_posix()
        for module, at_top in imports(path):
            if module in NOT_ON_PYPI | ON_REQUEST | LATER_STDLIB:
                continue
            dists = {canonical(d) for d in providers.get(module, [])}
            if not dists:
                problems.append(f'{where}: {module} is not installed here (declare it, or import it on request)')
            elif not dists & anywhere:
                problems.append(f'{where}: {module} ({", ".join(sorted(dists))}) is not declared')
            elif at_top and not where.startswith(f'{PKG}/ros/') and not dists & core:
                problems.append(f'{where}: {module} is imported at module scope but only an extra declares it')
    assert not problems, '\n'.join(sorted(set(problems)))


def test_declared_requirements_are_the_ones_make_tests_with(wheel):
    """requirements.txt pins what `make` installs and the tests run with: a declared package neither pinned
    there nor brought by a pinned one is never tested."""
    pinned = {requirement_name(line) for line in (ROOT / 'requirements.txt').read_text().splitlines()
              if line.strip() and not line.startswith('#')}
    declared = set().union(*metadata(wheel).values()) - {'setuptools'}
    assert declared - with_dependencies(pinned) == set()


def test_package_xml_declares_the_ros_packages_the_code_imports(tree):
    """rosdep installs package.xml's exec_depends on a ROS install: each ROS package imported must be there,
    and none that nothing uses (cv_bridge: ROS' cv_bridge is not used, conversions are numpy; rosdep
    installed it and its OpenCV/Boost stack for nothing). rcl_interfaces (ros/params.py) was missing."""
    depends = {e.text for e in ET.parse(tree / 'package.xml').getroot().iter('exec_depend')}
    ros_depends = {d for d in depends if not d.startswith('python3-')}
    providers = importlib.metadata.packages_distributions()
    imported = set()
    for path in (tree / PKG).rglob('*.py'):
        for module, _ in imports(path):
            if module in NOT_ON_PYPI or any(d.startswith('ros-') for d in providers.get(module, [])):
                imported.add(module)
    assert imported - ros_depends == set(), 'imported, not an exec_depend'
    # lifecycle_msgs: rclpy.lifecycle's messages (segment_lifecycle_node), imported by rclpy itself
    assert ros_depends - imported - {'lifecycle_msgs'} == set(), 'an exec_depend nothing imports'


def test_a_module_deleted_from_the_source_leaves_the_wheel(tmp_path):
    """setuptools copies the package into build/lib and never removes what the source no longer has: a module
    deleted from the tree stayed in every later wheel (and `make install`), still importable."""
    src = copy_tree(tmp_path / 'src', skip=('models/',))
    build_wheel(src, tmp_path / 'first')
    (src / PKG / 'ros' / 'launch_support.py').unlink()
    with zipfile.ZipFile(build_wheel(src, tmp_path / 'second')) as z:
        assert f'{PKG}/ros/launch_support.py' not in z.namelist()
        assert f'{PKG}/ros/entry.py' in z.namelist()


def test_sdist_builds_the_same_wheel(tree, wheel, tmp_path):
    r = subprocess.run([sys.executable, 'setup.py', 'sdist', '-d', str(tmp_path / 'sdist')], cwd=tree,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'Unknown distribution option' not in r.stderr      # tests_require: setuptools warned at every build
    with tarfile.open(next((tmp_path / 'sdist').glob('*.tar.gz'))) as t:
        t.extractall(tmp_path / 'unpacked', filter='data')
    with zipfile.ZipFile(build_wheel(next((tmp_path / 'unpacked').iterdir()), tmp_path / 'whl')) as z:
        def digests(w):
            return {n: hashlib.sha256(w.read(n)).hexdigest() for n in w.namelist()}
        ours, theirs = digests(wheel), digests(z)
        assert sorted(set(ours) ^ set(theirs)) == []
        assert [n for n in ours if ours[n] != theirs[n]] == []


def test_one_version_everywhere(tree, wheel):
    """setup.py (the wheel), package.xml (ROS) and vidseg_ros.__version__ say the same release."""
    xml = ET.parse(tree / 'package.xml').getroot().findtext('version')
    code = re.search(r"^__version__ = '([^']+)'", (tree / PKG / '__init__.py').read_text(), re.M).group(1)
    meta = re.search(r'^Version: (.+)$', info(wheel, 'METADATA'), re.M).group(1)
    assert xml == code == meta
