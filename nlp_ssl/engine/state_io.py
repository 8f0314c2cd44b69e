"""Engine state in checkpoints as JSON and safetensors: nothing that resumes a run is ever unpickled.

A state tree is a nested dict whose leaves are JSON values or tensors. :func:`save_tree` writes the tensors
to ``<name>.safetensors`` (keyed by their dotted path) and the rest to ``<name>.json`` with a reference in
place of each tensor; :func:`load_tree` rebuilds the same tree.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

_TENSOR = "__tensor__"


def save_tree(tree: dict[str, Any], folder: Path, name: str,
              then: Callable[[], dict[str, Any]] | None = None) -> None:
    """Write ``tree`` as ``folder/name.json`` (+ ``folder/name.safetensors`` when it holds tensors).

    The JSON is written last; ``then()``, called once the tensors are on disk, adds top-level entries to it
    (e.g. the sizes of every file of a checkpoint, the safetensors file included).
    """
    tensors: dict[str, torch.Tensor] = {}

    def strip(node: Any, path: str) -> Any:
        if isinstance(node, torch.Tensor):
            tensors[path] = node.detach().to("cpu").contiguous()
            return {_TENSOR: path}
        if isinstance(node, dict):
            return {str(k): strip(v, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return [strip(v, f"{path}.{i}") for i, v in enumerate(node)]
        return node

    skeleton = strip(tree, "")
    if tensors:
        save_file(tensors, str(folder / f"{name}.safetensors"))
    if then is not None:
        skeleton.update(then())
    (folder / f"{name}.json").write_text(json.dumps(skeleton, indent=2) + "\n", encoding="utf-8")


def load_tree(folder: Path, name: str) -> dict[str, Any] | None:
    """The tree :func:`save_tree` wrote, or None if ``folder`` has none."""
    skeleton_file = folder / f"{name}.json"
    if not skeleton_file.is_file():
        return None
    skeleton = json.loads(skeleton_file.read_text(encoding="utf-8"))
    tensor_file = folder / f"{name}.safetensors"
    tensors = load_file(str(tensor_file)) if tensor_file.is_file() else {}

    def fill(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {_TENSOR}:
                return tensors[node[_TENSOR]]
            return {k: fill(v) for k, v in node.items()}
        if isinstance(node, list):
            return [fill(v) for v in node]
        return node

    return fill(skeleton)
