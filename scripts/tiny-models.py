#!/usr/bin/env python3
"""Writes one tiny ONNX model per output family into crates/detect/tests/models/<family>/, with
its model.toml, for the decoders' tests (crates/detect/tests/families.rs).

Each model answers fixed, hand-written outputs (added to zero times the input, so every image of
a batch gets them), except the SSD model, whose first score is the mean of the input's first
channel / 255: that proves the u8 NHWC input arrives in the right order. The expected boxes are
therefore known exactly; the test states them. Run with the reference venv (onnx 1.19.1):

    .venv-reference/bin/python scripts/tiny-models.py
"""
import hashlib
import math
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = pathlib.Path(__file__).resolve().parent.parent / "crates/detect/tests/models"
SIZE = 64  # square input side, pixels
LABELS = ["person", "car", "dog"]


def const(name, array):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(array, np.float32), name))


def zero_per_image(nodes, x, rank):
    """A [B, 1, ..., 1] tensor of zeros (rank dims) that depends on the input x."""
    nodes.append(helper.make_node("ReduceMean", [x], ["mean_all"], axes=[1, 2, 3], keepdims=0))
    nodes.append(const("zero", 0.0))
    nodes.append(helper.make_node("Mul", ["mean_all", "zero"], ["zero_b"]))
    nodes.append(helper.make_node("Constant", [], ["zshape"], value=numpy_helper.from_array(np.array([-1] + [1] * (rank - 1), np.int64), "zshape")))
    nodes.append(helper.make_node("Reshape", ["zero_b", "zshape"], [f"zeros{rank}"]))
    return f"zeros{rank}"


def fixed_output(nodes, zeros, name, array):
    nodes.append(const(f"{name}_c", array[None, ...]))
    nodes.append(helper.make_node("Add", [zeros, f"{name}_c"], [name]))


def image_input(name="images"):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])


def write(family, graph, manifest_extra, labels="labels.txt"):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="osprey tiny-models")
    model.ir_version = 8
    onnx.checker.check_model(model)
    out = ROOT / family
    out.mkdir(parents=True, exist_ok=True)
    data = model.SerializeToString()
    (out / "model.onnx").write_bytes(data)
    if labels == "labels.txt":
        (out / "labels.txt").write_text("\n".join(LABELS) + "\n")
    sha = hashlib.sha256(data).hexdigest()
    (out / "model.toml").write_text(
        f'name = "tiny-{family}"\nversion = "1"\nfamily = "{family}"\nsha256 = "{sha}"\n'
        f'licence = "Apache-2.0"\nprovenance = "scripts/tiny-models.py: fixed outputs, for the decoder tests"\n'
        f'labels = "{labels}"\nscore_threshold = 0.5\niou_threshold = 0.5\n\n[input]\nsize = {SIZE}\n{manifest_extra}'
    )
    print(f"{out / 'model.onnx'}: {len(data)} bytes, sha256 {sha}")


def rows_model(family, rows, shape_name="output0", transpose=False):
    """One output of fixed rows: [B, N, W], or [B, W, N] when transpose."""
    array = np.asarray(rows, np.float32)
    if transpose:
        array = array.T.copy()
    nodes = []
    zeros = zero_per_image(nodes, "images", 3)
    fixed_output(nodes, zeros, shape_name, array)
    out = helper.make_tensor_value_info(shape_name, TensorProto.FLOAT, ["batch", *array.shape])
    return helper.make_graph(nodes, family, [image_input()], [out])


def yolov8():
    # Columns: cx, cy, w, h, then one score per label. The second box overlaps the first (NMS).
    anchors = [
        [20, 20, 10, 10, 0.01, 0.9, 0.01],
        [21, 20, 10, 10, 0.01, 0.8, 0.01],
        [40, 40, 8, 16, 0.01, 0.02, 0.7],
        [50, 10, 6, 6, 0.3, 0.01, 0.01],
    ] + [[0, 0, 1, 1, 0.0, 0.0, 0.0]] * 4
    write("yolov8", rows_model("yolov8", anchors, transpose=True), 'layout = "nchw"\ncolour = "rgb"\nstd = [255, 255, 255]\n')


def yolov5():
    # Rows: cx, cy, w, h, objectness, one score per label.
    rows = [
        [30, 30, 20, 10, 0.9, 0.1, 0.9, 0.0],
        [30, 30, 20, 10, 0.4, 1.0, 1.0, 1.0],
        [10, 10, 4, 4, 0.95, 1.0, 0.0, 0.0],
        [12, 10, 4, 4, 0.9, 0.9, 0.0, 0.0],
        [50, 50, 8, 8, 0.9, 0.0, 0.0, 0.5],
    ]
    write("yolov5", rows_model("yolov5", rows, "output"), 'layout = "nchw"\ncolour = "rgb"\nstd = [255, 255, 255]\n')


def yolox():
    cells = sum((SIZE // s) ** 2 for s in (8, 16, 32))  # 64 + 16 + 4
    rows = np.zeros((cells, 5 + len(LABELS)), np.float32)
    # Stride 16, grid cell x=2, y=1: row 64 + 1 * 4 + 2.
    rows[64 + 4 + 2] = [0.5, 0.5, math.log(2), 0.0, 0.9, 0.8, 0.1, 0.0]
    # Stride 32, cell x=1, y=1 (the last row): a dog.
    rows[-1] = [0.25, 0.75, 0.0, math.log(0.5), 1.0, 0.0, 0.0, 0.6]
    write("yolox", rows_model("yolox", rows, "output"), 'layout = "nchw"\ncolour = "bgr"\n')


def detr():
    nodes = []
    zeros = zero_per_image(nodes, "images", 3)
    boxes = np.array([[0.5, 0.5, 0.25, 0.25], [0.75, 0.25, 0.125, 0.25], [0.1, 0.1, 0.1, 0.1], [0.9, 0.9, 0.1, 0.1]], np.float32)
    logits = np.array([[-4.0, 2.0, -4.0], [-4.0, -4.0, 1.5], [-10, -10, -10], [-0.5, -10, -10]], np.float32)
    fixed_output(nodes, zeros, "logits", logits)
    fixed_output(nodes, zeros, "pred_boxes", boxes)
    outs = [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4, 3]),
        helper.make_tensor_value_info("pred_boxes", TensorProto.FLOAT, ["batch", 4, 4]),
    ]
    graph = helper.make_graph(nodes, "detr", [image_input()], outs)
    write("detr", graph, 'layout = "nchw"\ncolour = "rgb"\nmean = [123.675, 116.28, 103.53]\nstd = [58.395, 57.12, 57.375]\n')


def ssd():
    # As the TF Object Detection API exports it: uint8 NHWC of any size, four named outputs.
    x = helper.make_tensor_value_info("image_tensor:0", TensorProto.UINT8, ["batch", "height", "width", 3])
    nodes = [
        helper.make_node("Cast", ["image_tensor:0"], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("Constant", [], ["c0"], value=numpy_helper.from_array(np.array([0], np.int64), "c0")),
        helper.make_node("Constant", [], ["c1"], value=numpy_helper.from_array(np.array([1], np.int64), "c1")),
        helper.make_node("Constant", [], ["c3"], value=numpy_helper.from_array(np.array([3], np.int64), "c3")),
        helper.make_node("Slice", ["pixels", "c0", "c1", "c3"], ["first_channel"]),
        helper.make_node("ReduceMean", ["first_channel"], ["channel_mean"], axes=[1, 2, 3], keepdims=0),
        const("c255", 255.0),
        helper.make_node("Div", ["channel_mean", "c255"], ["first_score"]),
        helper.make_node("Unsqueeze", ["first_score", "c1"], ["first_score_2d"]),
        const("zero", 0.0),
        helper.make_node("Mul", ["channel_mean", "zero"], ["zero_b"]),
        helper.make_node("Unsqueeze", ["zero_b", "c1"], ["zeros2"]),
    ]
    nodes.append(helper.make_node("Constant", [], ["s3"], value=numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "s3")))
    nodes.append(helper.make_node("Reshape", ["zero_b", "s3"], ["zeros3"]))
    fixed_output(nodes, "zeros2", "other_scores", np.array([0.6, 0.3], np.float32))
    nodes.append(helper.make_node("Concat", ["first_score_2d", "other_scores"], ["detection_scores:0"], axis=1))
    # ymin, xmin, ymax, xmax in 0..1.
    boxes = np.array([[0.25, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 0.75], [0.0, 0.0, 1.0, 1.0]], np.float32)
    fixed_output(nodes, "zeros3", "detection_boxes:0", boxes)
    fixed_output(nodes, "zeros2", "detection_classes:0", np.array([1, 3, 18], np.float32))
    nodes.append(const("two", 2.0))
    nodes.append(helper.make_node("Add", ["zero_b", "two"], ["num_detections:0"]))
    outs = [
        helper.make_tensor_value_info("detection_boxes:0", TensorProto.FLOAT, ["batch", 3, 4]),
        helper.make_tensor_value_info("detection_scores:0", TensorProto.FLOAT, ["batch", 3]),
        helper.make_tensor_value_info("detection_classes:0", TensorProto.FLOAT, ["batch", 3]),
        helper.make_tensor_value_info("num_detections:0", TensorProto.FLOAT, ["batch"]),
    ]
    graph = helper.make_graph(nodes, "ssd", [x], outs)
    write("ssd", graph, 'layout = "nhwc"\ncolour = "rgb"\n', labels="coco90")


if __name__ == "__main__":
    for make in (yolov8, yolov5, yolox, detr, ssd):
        make()
