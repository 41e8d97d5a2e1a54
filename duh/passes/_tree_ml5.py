"""ai.onnx.ml 5's ``TreeEnsemble`` restated as the ai.onnx.ml 3 ``TreeEnsembleRegressor`` the
tree lowering reads.

Opset 5 keeps one array of internal nodes for every tree (``tree_roots`` index into it) and
separate leaf arrays; a child index points at a node or, where ``nodes_{true,false}leafs`` says
so, at a leaf. The regressor form numbers nodes and leaves per tree, leaves as ``LEAF`` nodes.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["as_regressor"]

_MODES = ("BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ")
_AGGREGATES = ("AVERAGE", "SUM", "MIN", "MAX")
TRANSFORMS = ("NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO", "PROBIT")


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    out: dict[str, object] = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        out[a.name] = numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else value
    return out


def as_regressor(node: onnx.NodeProto, output: str) -> tuple[onnx.NodeProto | None, str, str]:
    """The regressor node writing ``output``, its post_transform, and why not (a reason)."""
    a = _attrs(node)
    modes = np.asarray(a.get("nodes_modes", []), np.int64).reshape(-1)
    if modes.size and modes.max() >= len(_MODES):
        return None, "", "BRANCH_MEMBER (set membership) nodes are not lowered"
    transform = int(a.get("post_transform", 0))  # type: ignore[call-overload]
    aggregate = int(a.get("aggregate_function", 1))  # type: ignore[call-overload]
    splits = np.asarray(a.get("nodes_splits", []), np.float64).reshape(-1)
    features = list(a.get("nodes_featureids", []))  # type: ignore[call-overload]
    true_ids = list(a.get("nodes_truenodeids", []))  # type: ignore[call-overload]
    false_ids = list(a.get("nodes_falsenodeids", []))  # type: ignore[call-overload]
    true_leaf = list(a.get("nodes_trueleafs", []))  # type: ignore[call-overload]
    false_leaf = list(a.get("nodes_falseleafs", []))  # type: ignore[call-overload]
    missing = list(a.get("nodes_missing_value_tracks_true", [])) or [0] * len(features)  # type: ignore[call-overload]
    leaf_targets = list(a.get("leaf_targetids", []))  # type: ignore[call-overload]
    leaf_weights = np.asarray(a.get("leaf_weights", []), np.float64).reshape(-1)
    roots = list(a.get("tree_roots", []))  # type: ignore[call-overload]
    sizes = {len(features), len(true_ids), len(false_ids), len(true_leaf), len(false_leaf),
             modes.size, splits.size, len(missing)}  # fmt: skip
    if not roots or len(sizes) != 1 or len(leaf_targets) != leaf_weights.size:
        return None, "", "its node or leaf attributes are missing or of unequal lengths"
    tree_ids: list[int] = []
    node_ids: list[int] = []
    out_features: list[int] = []
    values: list[float] = []
    out_modes: list[str] = []
    trues: list[int] = []
    falses: list[int] = []
    tracks: list[int] = []
    t_trees: list[int] = []
    t_nodes: list[int] = []
    t_ids: list[int] = []
    t_weights: list[float] = []
    for tree, root in enumerate(roots):
        numbers: dict[tuple[bool, int], int] = {}

        def number(key: tuple[bool, int], numbers: dict[tuple[bool, int], int] = numbers) -> int:
            return numbers.setdefault(key, len(numbers))

        todo = [(False, int(root))]
        while todo:
            is_leaf, index = todo.pop()
            own = number((is_leaf, index))
            tree_ids.append(tree)
            node_ids.append(own)
            if is_leaf:
                for column, value in ((out_features, 0), (trues, 0), (falses, 0), (tracks, 0)):
                    column.append(value)
                values.append(0.0)
                out_modes.append("LEAF")
                t_trees.append(tree)
                t_nodes.append(own)
                t_ids.append(int(leaf_targets[index]))
                t_weights.append(float(leaf_weights[index]))
                continue
            if len(node_ids) > len(features) + len(leaf_targets) + len(roots):
                return None, "", f"tree {tree} has a cycle"
            kids = [(bool(true_leaf[index]), int(true_ids[index])),
                    (bool(false_leaf[index]), int(false_ids[index]))]  # fmt: skip
            out_features.append(int(features[index]))
            values.append(float(splits[index]))
            out_modes.append(_MODES[int(modes[index])])
            trues.append(number(kids[0]))
            falses.append(number(kids[1]))
            tracks.append(int(missing[index]))
            todo.extend(reversed(kids))
    regressor = helper.make_node(
        "TreeEnsembleRegressor", [node.input[0]], [output], domain="ai.onnx.ml",
        name=node.name, n_targets=int(a.get("n_targets", 1)),  # type: ignore[call-overload]
        aggregate_function=_AGGREGATES[aggregate], post_transform="NONE",
        nodes_treeids=tree_ids, nodes_nodeids=node_ids, nodes_featureids=out_features,
        nodes_values_as_tensor=numpy_helper.from_array(np.array(values, np.float64)),
        nodes_modes=out_modes, nodes_truenodeids=trues,
        nodes_falsenodeids=falses, nodes_missing_value_tracks_true=tracks,
        target_treeids=t_trees, target_nodeids=t_nodes, target_ids=t_ids,
        target_weights=t_weights,
    )  # fmt: skip
    return regressor, TRANSFORMS[transform], ""
