"""Tiny ONNX stand-ins for yzd-v/DWPose's two files, in their input/output layout, with known outputs.

Layout of the official files (YOLOX's tools/export_onnx.py defaults; mmdeploy's SimCC export):
    yolox_l.onnx          input "images" float32 (1, 3, 640, 640) -> "output" float32 (1, 8400, 85)
    dw-ll_ucoco_384.onnx  input "input" float32 (1, 3, 384, 288)  -> "simcc_x" (1, 133, 576), "simcc_y" (1, 133, 768)

Stand-ins:
- ``rectangle_detector``: one person row whose box is the bounding box of the pixels with a mid-grey
  green channel (120..140) in the letterboxed input, objectness 1 when there are any, else 0.
- ``constant_detector``: fixed rows (a box in letterbox pixels, objectness and class probabilities).
- ``channel_peak_pose_model``: COCO-WholeBody point k peaks where channel k % 3 of the crop is brightest:
  simcc_x = X_WEIGHT[k] x the column maxima of that channel, each crop pixel repeated over two bins
  (SimCC's split ratio 2), simcc_y likewise with Y_WEIGHT[k] and the row maxima.

``person_image`` draws what they look for: a mid-grey box and one bright dot per colour channel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17  # ReduceMax/ReduceMin still take axes as an attribute
DETECTOR_SIZE = (640, 640)
POSE_SIZE = (384, 288)  # height, width
ROWS = sum((640 // stride) ** 2 for stride in (8, 16, 32))  # 8400
ROW_VALUES = 85  # 4 box values, objectness, 80 COCO classes
POINTS = 133
# Per-point weights of the x and y logits: the score (the smaller maximum) comes from x for even points
# and from y for odd ones.
X_WEIGHT = np.where(np.arange(POINTS) % 2 == 0, 0.2, 0.4).astype(np.float32)
Y_WEIGHT = np.where(np.arange(POINTS) % 2 == 0, 0.4, 0.2).astype(np.float32)


DOT_RADIUS = 6


def person_image(
    size: tuple[int, int], dots: dict[int, tuple[int, int]], grey_box: tuple[int, int, int, int] | None = None
) -> np.ndarray:
    """An (H, W, 3) uint8 RGB image: dark, a mid-grey (128) box x0, y0, x1, y1 if given, and for each
    channel -> (x, y) of ``dots`` a pyramid of height 255 and radius DOT_RADIUS in that channel, centred
    on that integer pixel."""
    image = np.full((*size, 3), 30, np.uint8)
    if grey_box is not None:
        x0, y0, x1, y1 = grey_box
        image[y0:y1, x0:x1] = 128
    ys, xs = np.mgrid[0 : size[0], 0 : size[1]]
    for channel, (x, y) in dots.items():
        peak = 255.0 * np.clip(1 - np.maximum(abs(xs - x), abs(ys - y)) / DOT_RADIUS, 0, 1)
        image[..., channel] = np.maximum(image[..., channel], peak.round().astype(np.uint8))
    return image


def _constant(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name))


def _save(nodes: list, inputs: list, outputs: list, path: Path) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _detector_io() -> tuple[onnx.ValueInfoProto, onnx.ValueInfoProto]:
    return (
        helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, *DETECTOR_SIZE]),
        helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, ROWS, ROW_VALUES]),
    )


def encode_row(box_xyxy: tuple[float, float, float, float], objectness: float, classes: dict[int, float]) -> np.ndarray:
    """The (85,) output row of grid cell (0, 0) at stride 8 that decodes to ``box_xyxy`` in letterbox pixels."""
    x0, y0, x1, y1 = box_xyxy
    row = np.zeros(ROW_VALUES, np.float32)
    row[:4] = [(x0 + x1) / 2 / 8, (y0 + y1) / 2 / 8, np.log((x1 - x0) / 8), np.log((y1 - y0) / 8)]
    row[4] = objectness
    for index, probability in classes.items():
        row[5 + index] = probability
    return row


def constant_detector(path: Path, rows: dict[int, np.ndarray]) -> Path:
    """A detector whose output is zero except ``rows`` (row index -> (85,) values; row r of the stride-8
    grid is cell (r % 80, r // 80), so encode a box for cell (0, 0) and shift its centre by the cell)."""
    output = np.zeros((1, ROWS, ROW_VALUES), np.float32)
    for index, row in rows.items():
        output[0, index] = row
        output[0, index, 0] -= index % 80
        output[0, index, 1] -= index // 80
    images, result = _detector_io()
    # Output = constant + 0 * sum(images): the graph reads its input like the real detector.
    nodes = [
        _constant("rows", output),
        helper.make_node("ReduceSum", ["images"], ["total"], keepdims=0),
        _constant("zero", np.float32(0.0)),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
        helper.make_node("Add", ["rows", "nothing"], ["output"]),
    ]
    return _save(nodes, [images], [result], path)


def rectangle_detector(path: Path) -> Path:
    """A detector that reports the bounding box of the mid-grey pixels as one person (see module docstring)."""
    height, width = DETECTOR_SIZE
    images, result = _detector_io()
    nodes = [
        _constant("green_start", np.array([1], np.int64)),
        _constant("green_end", np.array([2], np.int64)),
        _constant("channel_axis", np.array([1], np.int64)),
        helper.make_node("Slice", ["images", "green_start", "green_end", "channel_axis"], ["green"]),
        _constant("low", np.float32(120.0)),
        _constant("high", np.float32(140.0)),
        helper.make_node("Greater", ["green", "low"], ["above"]),
        helper.make_node("Less", ["green", "high"], ["below"]),
        helper.make_node("And", ["above", "below"], ["grey_bool"]),
        helper.make_node("Cast", ["grey_bool"], ["grey"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMax", ["grey"], ["columns"], axes=[2], keepdims=1),  # (1, 1, 1, W)
        helper.make_node("ReduceMax", ["grey"], ["rows_hit"], axes=[3], keepdims=1),  # (1, 1, H, 1)
        helper.make_node("ReduceMax", ["grey"], ["any"], axes=[1, 2, 3], keepdims=1),  # (1, 1, 1, 1)
        _constant("xs", np.arange(width, dtype=np.float32).reshape(1, 1, 1, width)),
        _constant("ys", np.arange(height, dtype=np.float32).reshape(1, 1, height, 1)),
        _constant("far", np.float32(1e4)),
        _constant("one", np.float32(1.0)),
        _constant("cell", np.float32(8.0)),
    ]

    def extent(hit: str, coords: str, axis: int, prefix: str) -> None:
        nodes.extend([
            helper.make_node("Add", [coords, "one"], [f"{prefix}_end_coords"]),
            helper.make_node("Mul", [hit, f"{prefix}_end_coords"], [f"{prefix}_ends"]),
            helper.make_node("ReduceMax", [f"{prefix}_ends"], [f"{prefix}_max"], axes=[axis], keepdims=1),
            helper.make_node("Sub", ["one", hit], [f"{prefix}_miss"]),
            helper.make_node("Mul", [f"{prefix}_miss", "far"], [f"{prefix}_far"]),
            helper.make_node("Mul", [hit, coords], [f"{prefix}_starts_hit"]),
            helper.make_node("Add", [f"{prefix}_starts_hit", f"{prefix}_far"], [f"{prefix}_starts"]),
            helper.make_node("ReduceMin", [f"{prefix}_starts"], [f"{prefix}_min"], axes=[axis], keepdims=1),
            helper.make_node("Add", [f"{prefix}_min", f"{prefix}_max"], [f"{prefix}_sum"]),
            helper.make_node("Div", [f"{prefix}_sum", "cell"], [f"{prefix}_twice_centre"]),
            _constant(f"{prefix}_half", np.float32(0.5)),
            helper.make_node("Mul", [f"{prefix}_twice_centre", f"{prefix}_half"], [f"{prefix}_centre"]),
            helper.make_node("Sub", [f"{prefix}_max", f"{prefix}_min"], [f"{prefix}_size_raw"]),
            helper.make_node("Max", [f"{prefix}_size_raw", "one"], [f"{prefix}_size"]),
            helper.make_node("Div", [f"{prefix}_size", "cell"], [f"{prefix}_cells"]),
            helper.make_node("Log", [f"{prefix}_cells"], [f"{prefix}_log_size"]),
        ])  # fmt: skip

    extent("columns", "xs", 3, "x")
    extent("rows_hit", "ys", 2, "y")
    shape_111 = np.array([1, 1, 1], np.int64)
    nodes.append(_constant("shape_111", shape_111))
    values = ["x_centre", "y_centre", "x_log_size", "y_log_size", "any", "any"]
    for value in values[:5]:
        nodes.append(helper.make_node("Reshape", [value, "shape_111"], [f"{value}_111"]))
    nodes.extend([
        _constant("other_classes", np.zeros((1, 1, ROW_VALUES - 6), np.float32)),
        helper.make_node("Concat", [*(f"{value}_111" for value in values), "other_classes"], ["row"], axis=2),
        _constant("other_rows", np.zeros((1, ROWS - 1, ROW_VALUES), np.float32)),
        helper.make_node("Concat", ["row", "other_rows"], ["output"], axis=1),
    ])  # fmt: skip
    return _save(nodes, [images], [result], path)


def channel_peak_pose_model(path: Path) -> Path:
    """The pose stand-in of the module docstring."""
    height, width = POSE_SIZE
    image = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, height, width])
    outputs = [
        helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [1, POINTS, 2 * width]),
        helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [1, POINTS, 2 * height]),
    ]
    nodes = [
        _constant("channel_of_point", (np.arange(POINTS) % 3).astype(np.int64)),
        _constant("x_weight", X_WEIGHT.reshape(1, POINTS, 1)),
        _constant("y_weight", Y_WEIGHT.reshape(1, POINTS, 1)),
        _constant("last_axis", np.array([-1], np.int64)),
    ]
    for axis_name, reduce_axis, length in (("x", 2, width), ("y", 3, height)):
        nodes.extend([
            helper.make_node("ReduceMax", ["input"], [f"{axis_name}_profile"], axes=[reduce_axis], keepdims=0),
            helper.make_node("Unsqueeze", [f"{axis_name}_profile", "last_axis"], [f"{axis_name}_column"]),
            helper.make_node("Concat", [f"{axis_name}_column", f"{axis_name}_column"], [f"{axis_name}_pairs"], axis=-1),
            _constant(f"{axis_name}_shape", np.array([1, 3, 2 * length], np.int64)),
            helper.make_node("Reshape", [f"{axis_name}_pairs", f"{axis_name}_shape"], [f"{axis_name}_bins"]),
            helper.make_node("Gather", [f"{axis_name}_bins", "channel_of_point"], [f"{axis_name}_points"], axis=1),
            helper.make_node("Mul", [f"{axis_name}_points", f"{axis_name}_weight"], [f"simcc_{axis_name}"]),
        ])  # fmt: skip
    return _save(nodes, [image], outputs, path)
