"""Small ONNX graph surgery helpers shared by the model build scripts."""
import numpy as np
import onnx
from onnx import numpy_helper


def const_value(model, name):
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(node.attribute[0].t)
    return None


def consumers(model, name):
    return [n for n in model.graph.node if name in n.input]


def fold_pads(model):
    """Fold constant Pad nodes into the pads attribute of the Conv/MaxPool that consumes them.

    Conv accepts a zero-valued Pad; MaxPool accepts a -inf Pad (its own padding never wins the
    max). Folding the -inf Pad is what keeps static QDQ calibration finite (a -inf activation
    otherwise yields a NaN scale). Returns the number of folded Pads.
    """
    folded = 0
    for pad in [n for n in model.graph.node if n.op_type == "Pad"]:
        mode = next((a.s.decode() for a in pad.attribute if a.name == "mode"), "constant")
        pads = const_value(model, pad.input[1])
        value = const_value(model, pad.input[2]) if len(pad.input) > 2 and pad.input[2] else np.float32(0)
        users = consumers(model, pad.output[0])
        if mode != "constant" or pads is None or value is None or len(users) != 1:
            continue
        user = users[0]
        value = float(np.asarray(value).reshape(-1)[0])
        ok = (user.op_type == "Conv" and value == 0.0) or (user.op_type == "MaxPool" and value == -np.inf)
        pads = [int(p) for p in pads]
        rank = len(pads) // 2
        # only spatial padding (N and C untouched)
        if not ok or rank != 4 or any(pads[i] for i in (0, 1, 4, 5)):
            continue
        spatial = [pads[2], pads[3], pads[6], pads[7]]
        attr = next((a for a in user.attribute if a.name == "pads"), None)
        if attr is None:
            user.attribute.append(onnx.helper.make_attribute("pads", spatial))
        else:
            old = list(attr.ints)
            del attr.ints[:]
            attr.ints.extend([a + b for a, b in zip(old, spatial)])
        for a in list(user.attribute):
            if a.name == "auto_pad":
                user.attribute.remove(a)
        user.input[0] = pad.input[0]
        model.graph.node.remove(pad)
        folded += 1
    return folded


def rename_tensor(model, old, new):
    for n in model.graph.node:
        for i, x in enumerate(n.input):
            if x == old:
                n.input[i] = new
        for i, x in enumerate(n.output):
            if x == old:
                n.output[i] = new
    for vi in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        if vi.name == old:
            vi.name = new
