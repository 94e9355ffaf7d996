"""The package's import graph: imports point down the layers only, and no module cycle exists.

Layers, lowest first (docs/architecture.md): constants/config -> models -> engine -> data ->
training -> tools/cli -> ros. Every ``import``, including those inside functions, counts.
"""
import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / 'vidseg_ros'
LAYERS = {'__init__': 0, 'constants': 0, 'config': 0, 'text': 0, 'files': 0, 'parent_death': 0, 'extras': 0, 'models': 1, 'engine': 2, 'data': 3, 'training': 4,
          'tools': 5, 'cli': 5, 'ros': 6}


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in PACKAGE.rglob('*.py')}
    graph: dict[str, set[str]] = defaultdict(set)
    for mod, path in files.items():
        package = mod if path.name == '__init__.py' else mod.rpartition('.')[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                graph[mod].update(a.name for a in node.names if a.name.split('.')[0] == 'vidseg_ros')
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = '.'.join(package.split('.')[:len(package.split('.')) - node.level + 1])
                    base = f'{base}.{node.module}' if node.module else base
                elif (node.module or '').split('.')[0] == 'vidseg_ros':
                    base = node.module
                else:
                    continue
                # `from pkg import module` names a module; `from module import name` the module itself
                graph[mod].update(f'{base}.{a.name}' if f'{base}.{a.name}' in files else base for a in node.names)
    return {m: {t for t in targets if t in files and t != m} for m, targets in graph.items()}


def _layer(module: str) -> int:
    parts = module.split('.')
    return LAYERS[parts[1]] if len(parts) > 1 else 0


def test_imports_point_down_the_layers():
    upward = [f'{m} -> {t}' for m, targets in _graph().items() for t in targets if _layer(t) > _layer(m)]
    assert not upward, 'imports pointing up a layer:\n' + '\n'.join(sorted(upward))


# inside data/: shared leaf modules, then bags, then what builds on them; siblings never import each other
DATA_LAYERS = {'bags': 1, 'recorder': 2, 'datasets': 2, 'labelling': 3}


def _data_layer(module: str) -> tuple[int, str]:
    parts = module.split('.')
    sub = parts[2] if len(parts) > 3 and parts[1] == 'data' else ''
    return DATA_LAYERS.get(sub, 0), sub


def test_data_subpackages_point_down():
    bad = []
    for m, targets in _graph().items():
        if not m.startswith('vidseg_ros.data.'):
            continue
        (lm, sm) = _data_layer(m)
        for t in targets:
            (lt, st) = _data_layer(t)
            if t.startswith('vidseg_ros.data.') and st != sm and lt >= lm:
                bad.append(f'{m} -> {t}')
    assert not bad, 'data/ imports across or up its sub-packages:\n' + '\n'.join(sorted(bad))


def test_no_import_cycles():
    graph, state, cycles, stack = _graph(), {}, [], []

    def visit(m):
        state[m] = 'open'
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 'open':
                cycles.append(' -> '.join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 'done'

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, 'import cycles:\n' + '\n'.join(cycles)


def test_the_checker_sees_what_it_should():
    """Guard against a graph that is empty or misses relative imports (a test that cannot fail)."""
    graph = _graph()
    assert 'vidseg_ros.training.data_setup' in graph['vidseg_ros.training.loop']        # `from . import x`
    assert 'vidseg_ros.models.checkpoint' in graph['vidseg_ros.engine.stream']
    assert 'vidseg_ros.data.bags.reader' in graph['vidseg_ros.data.datasets.extract']
    assert _data_layer('vidseg_ros.data.labelling.run') > _data_layer('vidseg_ros.data.datasets.layouts')
    assert _layer('vidseg_ros.ros.spin') > _layer('vidseg_ros.tools.docs') > _layer('vidseg_ros.models')
