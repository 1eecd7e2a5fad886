"""Gives the tf2onnx export of NanoDet a dynamic batch dimension, so one inference call can take
frames from several chunks.

tf2onnx keeps TF.js's fixed batch of 1: the input is [1, 3, 416, 416] and the six heads are
reshaped to [1, C, -1] by shapes computed from constants. This rewrites those shapes as [0, C, -1]
(0 copies the batch dimension), names the batch dimension on the input and outputs, and drops the
nodes that only computed the old shapes. Every weight is untouched.

usage: batch-nanodet.py IN.onnx OUT.onnx
"""
import sys

import onnx
from onnx import numpy_helper
import numpy as np


def main(src, dst):
    model = onnx.load(src)
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    shapes = {}
    for node in graph.node:
        if node.op_type != "Reshape":
            continue
        # The head reshapes take [N, C, H, W] to [1, C, H*W]; C is 80 (scores) or 44 (box bins).
        channels = head_channels(node, producers, graph)
        name = f"osprey_batch_shape_{channels}"
        if name not in shapes:
            shapes[name] = numpy_helper.from_array(np.array([0, channels, -1], dtype=np.int64), name)
        node.input[1] = name
    if not shapes:
        sys.exit("no head reshapes found: is this the tf2onnx export of NanoDet?")
    graph.initializer.extend(shapes.values())
    for value in list(graph.input) + list(graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_param = "batch"
    prune(graph)
    del graph.value_info[:]
    onnx.checker.check_model(model)
    onnx.save(model, dst)


def head_channels(reshape, producers, graph):
    """The channel count of a head: the size of the Split output (80 or 44) that feeds the
    reshape, directly or through a Sigmoid."""
    tensor = reshape.input[0]
    node = producers[tensor]
    if node.op_type == "Sigmoid":
        tensor = node.input[0]
        node = producers[tensor]
    if node.op_type != "Split":
        sys.exit(f"unexpected reshape {reshape.name}: fed by {node.op_type}, not a head Split")
    split = next(i for i in graph.initializer if i.name == node.input[1])
    return numpy_helper.to_array(split).tolist()[list(node.output).index(tensor)]


def prune(graph):
    """Removes nodes and initializers no output depends on."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(out in needed for out in node.output):
            keep.append(node)
            needed.update(node.input)
    keep.reverse()
    del graph.node[:]
    graph.node.extend(keep)
    used = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(used)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
