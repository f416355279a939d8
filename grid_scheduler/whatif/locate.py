"""Where in a YAML file a field is: map a pydantic error path to a line number.

The file is composed into YAML nodes (which carry their start marks) as well as
loaded into Python data; an error's path (``('changes', 2, 'site')``) is then walked
down the node tree. Pydantic puts union tags in a path (``('changes', 2, 'power_cut',
'site')``); a part that names nothing in the file is skipped, unless it is the last
part of the path and the node it would be in is a mapping: then the field is missing,
and the line is the mapping's own.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml


@dataclass(frozen=True)
class Located:
    line: int  # 1-based
    path: tuple[str | int, ...]  # the parts that name something in the file (and a missing last field)


def compose(text: str) -> yaml.Node | None:
    return yaml.compose(text, Loader=yaml.SafeLoader)


def locate(root: yaml.Node | None, loc: tuple[str | int, ...]) -> Located:
    if root is None:
        return Located(1, loc)
    node: yaml.Node = root
    line = node.start_mark.line + 1
    kept: list[str | int] = []
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        child, child_line = _child(node, part)
        if child is not None:
            node, line = child, child_line
            kept.append(part)
        elif last and isinstance(node, yaml.MappingNode) and isinstance(part, str):
            kept.append(part)  # a missing field: reported at the mapping that lacks it
    return Located(line, tuple(kept))


def _child(node: yaml.Node, part: str | int) -> tuple[yaml.Node | None, int]:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                return value, key.start_mark.line + 1
        return None, 0
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        item: yaml.Node = node.value[part]
        return item, item.start_mark.line + 1
    return None, 0
