"""The README's segment_node topic/service table matches what a running node really offers."""
from __future__ import annotations

import re
import time

from support.ros_helpers import ROOT

STANDARD = {'/rosout', '/parameter_events'}


def readme_rows() -> list[tuple[str, str, str]]:
    text = (ROOT / 'README.md').read_text()
    block = re.search(r'<!-- BEGIN segment_topics -->\n(.*?)<!-- END segment_topics -->', text, re.S).group(1)
    rows = []
    for line in block.splitlines()[2:]:
        cells = [c.strip().strip('`') for c in line.strip('|').split('|')]
        rows.append((cells[0], cells[1], cells[2]))
    return rows


def expand(name: str, node: str) -> str:
    return f'/{node}/{name[2:]}' if name.startswith('~/') else name if name.startswith('/') else f'/{name}'


def test_readme_table_matches_the_running_node(start_node, probe):
    # Every optional interface switched on; raw and compressed inputs need one node each.
    params = {'model': 'untrained:keyframe_fpn', 'input_hw': [64, 64], 'use_camera_info': True,
              'class_prob_index': 0}
    raw = start_node('vidseg_ros.ros.segment_node', params, name='seg_raw')
    jpg = start_node('vidseg_ros.ros.segment_node', {**params, 'transport': 'compressed'}, name='seg_jpg')
    for node_name, proc in (('seg_raw', raw), ('seg_jpg', jpg)):
        def ready(n=node_name):
            if n not in probe.node.get_node_names():
                return False
            pubs = probe.node.get_publisher_names_and_types_by_node(n, '/')
            return any(name == f'/{n}/mask' for name, _ in pubs)  # topics exist once the model is loaded
        probe.wait_for(ready, 60, f'{node_name} topics', proc)

    def snapshot() -> dict:
        g = probe.node
        return {n: {'publisher': dict(g.get_publisher_names_and_types_by_node(n, '/')),
                    'subscription': dict(g.get_subscriber_names_and_types_by_node(n, '/')),
                    'service': dict(g.get_service_names_and_types_by_node(n, '/'))} for n in ('seg_raw', 'seg_jpg')}
    rows = readme_rows()
    # the rest of each node's graph reaches the probe a little later: wait (generously) until every README
    # row is seen or the time is up; the checks below then name what is missing
    deadline = time.monotonic() + 30
    while True:
        graph = snapshot()
        if time.monotonic() > deadline or all(any(expand(name, n) in graph[n][kind] for n in graph)
                                              for name, kind, _ in rows):
            break
        time.sleep(0.1)
    documented = set()
    for name, kind, msg_type in rows:
        found = [n for n in ('seg_raw', 'seg_jpg') if expand(name, n) in graph[n][kind]]
        assert found, f'README lists {kind} {name} but no running node has it'
        assert msg_type in graph[found[0]][kind][expand(name, found[0])], f'{name}: type differs from README'
        documented |= {expand(name, n) for n in ('seg_raw', 'seg_jpg')}
    for n in ('seg_raw', 'seg_jpg'):
        for kind in ('publisher', 'subscription'):
            extra = set(graph[n][kind]) - documented - STANDARD
            assert not extra, f'{n} has undocumented {kind}s: {extra}'
