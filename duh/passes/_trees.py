"""ai.onnx.ml tree ensembles as arrays a GEMM lowering reads (one tree = internal nodes + leaves).

Reads ``TreeEnsembleClassifier`` / ``TreeEnsembleRegressor`` (ai.onnx.ml 1-3) attributes into
:class:`Forest`: per tree, the internal nodes (feature, threshold, mode, missing-value track,
true/false child) and the leaves with their weight per output column. ``None`` from
:func:`read_forest` means a form the lowering does not reproduce (the reason says which).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

__all__ = ["Forest", "ModeSet", "padded_size", "read_forest"]

ModeSet = ("BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ")


@dataclass(frozen=True, slots=True)
class Forest:
    """Padded per-tree matrices: T trees, I internal nodes, L leaves, K output columns."""

    features: np.ndarray  # [T, I] int64 feature of each internal node (0 where padded)
    thresholds: np.ndarray  # [T, I] float32
    modes: np.ndarray  # [T, I] index into ModeSet
    missing_true: np.ndarray  # [T, I] bool: a NaN goes the true way
    paths: np.ndarray  # [T, I, L] +1: leaf under the true child, -1: under the false child
    true_counts: np.ndarray  # [T, 1, L] true turns on the path to each leaf (-1: padding)
    leaf_values: np.ndarray  # [T, L, K] float32


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in node.attribute:
        value = onnx.helper.get_attribute_value(a)
        if isinstance(value, onnx.TensorProto):
            value = onnx.numpy_helper.to_array(value).tolist()
        if isinstance(value, list) and value and isinstance(value[0], bytes):
            value = [v.decode("utf-8") for v in value]
        out[a.name.removesuffix("_as_tensor")] = value
    return out


def _threshold32(value: float, mode: str) -> np.float32:
    """The float32 threshold that splits float32 inputs as ``value`` (a double) splits them.

    Rounding to nearest moves a split sitting between two float32 values (scikit-learn's
    midpoints) onto one of them, and sends that input the other way; rounding toward the side
    the comparison excludes keeps every float32 input where the double sends it.
    """
    nearest = np.float32(value)
    if float(nearest) == value or mode in ("BRANCH_EQ", "BRANCH_NEQ"):
        return nearest
    below = nearest if float(nearest) < value else np.nextafter(nearest, np.float32(-np.inf))
    above = nearest if float(nearest) > value else np.nextafter(nearest, np.float32(np.inf))
    # x <= v and x > v hold for float32 x as with the largest float32 under v; x < v, x >= v
    # as with the smallest float32 over it
    return below if mode in ("BRANCH_LEQ", "BRANCH_GT") else above


def padded_size(node: onnx.NodeProto) -> tuple[int, int, int]:
    """Trees, most internal nodes of a tree and most leaves of a tree: the [T, I, L] of the
    path matrix :func:`read_forest` would allocate (read from two attributes, cheaply)."""
    ids: list[int] = []
    leaf: list[bool] = []
    for a in node.attribute:
        if a.name == "nodes_treeids":
            ids = list(a.ints)
        elif a.name == "nodes_modes":
            leaf = [m == b"LEAF" for m in a.strings]
    if not ids or len(ids) != len(leaf):
        return 0, 0, 0  # read_forest says what is wrong
    trees = np.asarray(ids, np.int64)
    is_leaf = np.asarray(leaf, bool)
    _, tree_index = np.unique(trees, return_inverse=True)
    count = int(tree_index.max()) + 1
    leaves = np.bincount(tree_index[is_leaf], minlength=count)
    internal = np.bincount(tree_index[~is_leaf], minlength=count)
    return count, max(1, int(internal.max())), int(leaves.max())


def read_forest(node: onnx.NodeProto, columns: int) -> tuple[Forest | None, str]:
    """The forest of a TreeEnsemble{Classifier,Regressor} node with ``columns`` output columns."""
    a = _attrs(node)
    prefix = "class" if node.op_type == "TreeEnsembleClassifier" else "target"
    tree_ids = list(a.get("nodes_treeids", []))
    node_ids = list(a.get("nodes_nodeids", []))
    features = list(a.get("nodes_featureids", []))
    values = list(a.get("nodes_values", []))
    modes = list(a.get("nodes_modes", []))
    trues = list(a.get("nodes_truenodeids", []))
    falses = list(a.get("nodes_falsenodeids", []))
    missing = list(a.get("nodes_missing_value_tracks_true", [])) or [0] * len(tree_ids)
    if (
        not tree_ids
        or len({len(tree_ids), len(node_ids), len(modes), len(trues), len(falses)}) != 1
    ):
        return None, "its node attributes are missing or of unequal lengths"
    unknown = sorted(set(modes) - set(ModeSet) - {"LEAF"})
    if unknown:
        return None, f"node modes {', '.join(unknown)} are not lowered"
    weights: dict[tuple[int, int], dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for t, n, k, w in zip(
        a.get(f"{prefix}_treeids", []),
        a.get(f"{prefix}_nodeids", []),
        a.get(f"{prefix}_ids", []),
        a.get(f"{prefix}_weights", []),
        strict=True,
    ):
        if not 0 <= int(k) < columns:
            return None, f"a leaf writes column {k}, outside the {columns} outputs"
        weights[(int(t), int(n))][int(k)] += float(w)
    by_tree: dict[int, dict[int, int]] = defaultdict(dict)
    for i, (t, n) in enumerate(zip(tree_ids, node_ids, strict=True)):
        by_tree[int(t)][int(n)] = i
    trees = []
    for t in sorted(by_tree):
        index = by_tree[t]
        internal = [n for n, i in index.items() if modes[i] != "LEAF"]
        leaves = [n for n, i in index.items() if modes[i] == "LEAF"]
        children = {trues[index[n]] for n in internal} | {falses[index[n]] for n in internal}
        roots = [n for n in index if n not in children]
        if len(roots) != 1 or any(c not in index for c in children):
            return None, f"tree {t} is not one rooted tree"
        trees.append((t, index, internal, leaves, roots[0]))
    n_trees = len(trees)
    max_i = max(1, max(len(x[2]) for x in trees))
    max_l = max(len(x[3]) for x in trees)
    f = Forest(
        features=np.zeros((n_trees, max_i), np.int64),
        thresholds=np.zeros((n_trees, max_i), np.float32),
        modes=np.zeros((n_trees, max_i), np.int64),
        missing_true=np.zeros((n_trees, max_i), bool),
        paths=np.zeros((n_trees, max_i, max_l), np.float32),
        true_counts=np.full((n_trees, 1, max_l), -1.0, np.float32),
        leaf_values=np.zeros((n_trees, max_l, columns), np.float32),
    )
    for ti, (t, index, internal, leaves, root) in enumerate(trees):
        col_i = {n: j for j, n in enumerate(internal)}
        col_l = {n: j for j, n in enumerate(leaves)}
        for n in internal:
            i, j = index[n], col_i[n]
            f.features[ti, j] = int(features[i])
            f.thresholds[ti, j] = _threshold32(float(values[i]), str(modes[i]))
            f.modes[ti, j] = ModeSet.index(str(modes[i]))
            f.missing_true[ti, j] = bool(missing[i])
        # walk from the root: each leaf's ancestors, and which way the path turns at each
        stack: list[tuple[int, list[tuple[int, bool]]]] = [(root, [])]
        seen = 0
        while stack:
            n, path = stack.pop()
            seen += 1
            if seen > len(index):
                return None, f"tree {t} has a cycle"
            i = index[n]
            if modes[i] == "LEAF":
                j = col_l[n]
                for ancestor, went_true in path:
                    f.paths[ti, col_i[ancestor], j] = 1.0 if went_true else -1.0
                f.true_counts[ti, 0, j] = float(sum(w for _, w in path))
                for k, w in weights.get((t, n), {}).items():
                    f.leaf_values[ti, j, k] = w
            else:
                stack.append((trues[i], [*path, (n, True)]))
                stack.append((falses[i], [*path, (n, False)]))
    return f, ""
