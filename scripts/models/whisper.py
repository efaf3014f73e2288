"""Whisper tiny.en from a CTranslate2 model.bin to three ONNX graphs that tract runs.

    python whisper.py MODEL_DIR OUT_DIR

MODEL_DIR holds the CTranslate2 conversion (model.bin, vocabulary.txt, config.json). Written:

- frontend.onnx  audio [1,480000] f32 (16 kHz, zero-padded 30 s) -> log-mel [1,80,3000], exactly
  Whisper's recipe: reflect-padded 400-point Hann STFT, hop 160, power, Slaney mel filters,
  log10, clamp to (max - 8), (x + 4) / 4. The DFT is a strided Conv, so tract needs no FFT op.
- encoder.{fp32,int8}.onnx  log-mel -> per decoder layer the cross-attention keys [1,6,64,1500]
  (already transposed) and values [1,6,1500,64].
- decoder.{fp32,int8}.onnx  one token step: token [1,1] i64, the self-attention cache per layer
  (self_k_L / self_v_L, [1,6,P,64], P symbolic) and the cross keys/values -> logits [1,51864]
  and the caches grown by one. The position is read from the cache length, no extra input.

int8 is weight-only: every matmul/conv weight and the embedding table are stored as int8 with a
per-output-channel scale and a DequantizeLinear in front (activations stay float); the agent
dequantizes them once at load. The int8 embedding table is stored once and feeds the output
projection through a Transpose that is folded at load too. The fp32 variant stores the
projection as its own transposed copy: a shared float table made each tract step ~4x slower.

No output shapes are declared: tract refuses to load outputs declared as P+1 against a fresh
symbol.
"""
import json
import struct
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
N_FFT, HOP, N_MELS, SR, N_SAMPLES, N_FRAMES = 400, 160, 80, 16000, 480000, 3000
OPSET = 13


def read_ct2(path):
    """Reads a CTranslate2 model.bin (binary version 6): returns variables and aliases."""
    buf = Path(path).read_bytes()
    off = 0

    def take(fmt):
        nonlocal off
        (v,) = struct.unpack_from(fmt, buf, off)
        off += struct.calcsize(fmt)
        return v

    def string():
        nonlocal off
        n = take("H")
        s = buf[off : off + n - 1].decode()
        off += n
        return s

    version = take("I")
    if version != 6:
        raise SystemExit(f"unsupported CTranslate2 binary version {version}")
    spec, _revision = string(), take("I")
    if spec != "WhisperSpec":
        raise SystemExit(f"not a Whisper model: {spec}")
    variables = {}
    for _ in range(take("I")):
        name = string()
        shape = [take("I") for _ in range(take("B"))]
        dtype = DTYPES[take("B")]
        nbytes = take("I")
        count = nbytes // np.dtype(dtype).itemsize
        variables[name] = np.frombuffer(buf, dtype=dtype, count=count, offset=off).reshape(shape)
        off += nbytes
    for _ in range(take("I")):
        alias, target = string(), string()
        variables[alias] = variables[target]
    return variables


def mel_filters():
    """Slaney-style mel filterbank (librosa's default, which Whisper uses): [80, 201]."""
    def hz_to_mel(f):
        f = np.asarray(f, dtype=np.float64)
        mel = f / (200.0 / 3)
        log = f >= 1000.0
        return np.where(log, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), mel)

    def mel_to_hz(m):
        m = np.asarray(m, dtype=np.float64)
        f = m * (200.0 / 3)
        log = m >= 15.0
        return np.where(log, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), f)

    fft_freqs = np.linspace(0, SR / 2, N_FFT // 2 + 1)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(SR / 2), N_MELS + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    weights = np.zeros((N_MELS, len(fft_freqs)))
    for i in range(N_MELS):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : N_MELS + 2] - mel_f[:N_MELS]))[:, None]
    return weights.astype(np.float32)


class Graph:
    """A tiny ONNX graph builder: constants, nodes with generated names, optional int8 weights."""

    def __init__(self, int8=False):
        self.nodes, self.inits, self.n, self.int8 = [], [], 0, int8

    def name(self, hint):
        self.n += 1
        return f"{hint}_{self.n}"

    def const(self, value, hint="c"):
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type, inputs, hint=None, **attrs):
        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def ops(self, op_type, inputs, n_out, **attrs):
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, **attrs))
        return outs

    def weight(self, w, axis, hint="w"):
        """A float weight, or int8 + per-channel scale (along `axis`) behind a DequantizeLinear."""
        w = np.asarray(w, dtype=np.float32)
        if not self.int8:
            return self.const(w, hint)
        reduce = tuple(i for i in range(w.ndim) if i != axis)
        scale = np.maximum(np.abs(w).max(axis=reduce), 1e-12) / 127.0
        shape = [1] * w.ndim
        shape[axis] = -1
        q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
        zero = np.zeros_like(scale, dtype=np.int8)
        return self.op(
            "DequantizeLinear",
            [self.const(q, hint + "_q"), self.const(scale.astype(np.float32), hint + "_s"), self.const(zero, hint + "_z")],
            hint,
            axis=axis,
        )

    def linear(self, x, w, b=None):
        """x @ w.T + b, with w in CTranslate2's [out, in] layout (stored transposed, per-column scale)."""
        y = self.op("MatMul", [x, self.weight(np.asarray(w, np.float32).T, axis=1)])
        return self.op("Add", [y, self.const(np.asarray(b, np.float32))]) if b is not None else y

    def layer_norm(self, x, gamma, beta, eps=1e-5):
        mean = self.op("ReduceMean", [x], axes=[-1])
        d = self.op("Sub", [x, mean])
        var = self.op("ReduceMean", [self.op("Mul", [d, d])], axes=[-1])
        std = self.op("Sqrt", [self.op("Add", [var, self.const(np.float32(eps))])])
        y = self.op("Div", [d, std])
        y = self.op("Mul", [y, self.const(np.asarray(gamma, np.float32))])
        return self.op("Add", [y, self.const(np.asarray(beta, np.float32))])

    def gelu(self, x):
        e = self.op("Erf", [self.op("Div", [x, self.const(np.float32(np.sqrt(2.0)))])])
        h = self.op("Add", [e, self.const(np.float32(1.0))])
        return self.op("Mul", [self.op("Mul", [x, h]), self.const(np.float32(0.5))])

    def heads(self, x, n_heads, dh, transpose_keys=False):
        """[1, T, D] -> [1, H, T, dh] (or [1, H, dh, T] for keys)."""
        r = self.op("Reshape", [x, self.const(np.array([1, -1, n_heads, dh], np.int64))])
        return self.op("Transpose", [r], perm=[0, 2, 3, 1] if transpose_keys else [0, 2, 1, 3])

    def merge(self, x, d):
        t = self.op("Transpose", [x], perm=[0, 2, 1, 3])
        return self.op("Reshape", [t, self.const(np.array([1, -1, d], np.int64))])

    def attend(self, q, kt, v, dh):
        s = self.op("MatMul", [q, kt])
        s = self.op("Mul", [s, self.const(np.float32(1.0 / np.sqrt(dh)))])
        return self.op("MatMul", [self.op("Softmax", [s], axis=-1), v])

    def ffn(self, x, p):
        h = self.layer_norm(x, p["layer_norm/gamma"], p["layer_norm/beta"])
        h = self.gelu(self.linear(h, p["linear_0/weight"], p["linear_0/bias"]))
        return self.op("Add", [x, self.linear(h, p["linear_1/weight"], p["linear_1/bias"])])

    def model(self, inputs, outputs, name):
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edge-agent")
        m.ir_version = 8
        onnx.checker.check_model(m)
        return m


def scope(vs, prefix):
    return {k[len(prefix) :]: v for k, v in vs.items() if k.startswith(prefix)}


def tensor(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def untyped(name, rank):
    """An output with a rank but no declared dims (tract rejects `P+1` declared against a new symbol)."""
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [None] * rank)


def frontend():
    g = Graph()
    n_bins = N_FFT // 2 + 1
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float64)  # periodic Hann
    k = np.arange(n_bins)[:, None] * np.arange(N_FFT)[None, :] * 2 * np.pi / N_FFT
    basis = np.concatenate([np.cos(k) * window, -np.sin(k) * window]).astype(np.float32)[:, None, :]
    # reflect padding by N_FFT/2 on both sides, built from reversed slices (Pad's reflect mode is
    # not portable across runtimes)
    half = N_FFT // 2
    ax = g.const(np.array([1], np.int64))
    left = g.op("Slice", ["audio", g.const(np.array([half], np.int64)), g.const(np.array([0], np.int64)), ax,
                          g.const(np.array([-1], np.int64))])
    right = g.op("Slice", ["audio", g.const(np.array([-2], np.int64)), g.const(np.array([-half - 2], np.int64)), ax,
                           g.const(np.array([-1], np.int64))])
    padded = g.op("Concat", [left, "audio", right], axis=1)
    x = g.op("Unsqueeze", [padded, g.const(np.array([1], np.int64))])
    spec = g.op("Conv", [x, g.const(basis)], strides=[HOP])  # [1, 402, 3001]
    spec = g.op("Slice", [spec, g.const(np.array([0], np.int64)), g.const(np.array([N_FRAMES], np.int64)),
                          g.const(np.array([2], np.int64))])
    re, im = g.ops("Split", [spec], 2, axis=1)
    power = g.op("Add", [g.op("Mul", [re, re]), g.op("Mul", [im, im])])
    mel = g.op("MatMul", [g.const(mel_filters()), power])  # [1, 80, 3000]
    log = g.op("Log", [g.op("Max", [mel, g.const(np.float32(1e-10))])])
    log = g.op("Div", [log, g.const(np.float32(np.log(10.0)))])
    top = g.op("ReduceMax", [log], keepdims=1)
    log = g.op("Max", [log, g.op("Sub", [top, g.const(np.float32(8.0))])])
    out = g.op("Div", [g.op("Add", [log, g.const(np.float32(4.0))]), g.const(np.float32(4.0))])
    g.nodes.append(helper.make_node("Identity", [out], ["mel"]))
    return g.model([tensor("audio", [1, N_SAMPLES])], [tensor("mel", [1, N_MELS, N_FRAMES])], "whisper_frontend")


def encoder(vs, int8, n_heads, n_dec):
    g = Graph(int8)
    e = scope(vs, "encoder/")
    d = e["conv1/bias"].shape[0]
    dh = d // n_heads
    x = g.op("Conv", ["mel", g.weight(e["conv1/weight"], 0), g.const(e["conv1/bias"].astype(np.float32))], pads=[1, 1])
    x = g.gelu(x)
    x = g.op("Conv", [x, g.weight(e["conv2/weight"], 0), g.const(e["conv2/bias"].astype(np.float32))],
             pads=[1, 1], strides=[2])
    x = g.gelu(x)
    x = g.op("Transpose", [x], perm=[0, 2, 1])
    x = g.op("Add", [x, g.const(e["position_encodings/encodings"].astype(np.float32))])
    layer = 0
    while f"layer_{layer}/ffn/linear_0/weight" in e:
        p = scope(e, f"layer_{layer}/self_attention/")
        h = g.layer_norm(x, p["layer_norm/gamma"], p["layer_norm/beta"])
        qkv = g.linear(h, p["linear_0/weight"], p["linear_0/bias"])
        q, k, v = g.ops("Split", [qkv], 3, axis=2)
        a = g.attend(g.heads(q, n_heads, dh), g.heads(k, n_heads, dh, True), g.heads(v, n_heads, dh), dh)
        x = g.op("Add", [x, g.linear(g.merge(a, d), p["linear_1/weight"], p["linear_1/bias"])])
        x = g.ffn(x, scope(e, f"layer_{layer}/ffn/"))
        layer += 1
    x = g.layer_norm(x, e["layer_norm/gamma"], e["layer_norm/beta"])
    outputs = []
    for i in range(n_dec):
        p = scope(vs, f"decoder/layer_{i}/attention/")
        w, b = p["linear_1/weight"], p["linear_1/bias"]
        k = g.linear(x, w[:d], b[:d])
        v = g.linear(x, w[d:], b[d:])
        g.nodes.append(helper.make_node("Identity", [g.heads(k, n_heads, dh, True)], [f"cross_k_{i}"]))
        g.nodes.append(helper.make_node("Identity", [g.heads(v, n_heads, dh)], [f"cross_v_{i}"]))
        outputs += [tensor(f"cross_k_{i}", [1, n_heads, dh, 1500]), tensor(f"cross_v_{i}", [1, n_heads, 1500, dh])]
    return g.model([tensor("mel", [1, N_MELS, N_FRAMES])], outputs, "whisper_encoder")


def decoder(vs, int8, n_heads, n_dec):
    g = Graph(int8)
    dd = scope(vs, "decoder/")
    emb = dd["embeddings/weight"].astype(np.float32)
    d = emb.shape[1]
    dh = d // n_heads
    if int8:
        # one int8 table (per-row scales) feeds both the lookup and, transposed, the output
        # projection; the agent folds both at load into separate float constants
        table = g.weight(emb, 0, "embed")
        proj = g.op("Transpose", [table], perm=[1, 0])
    else:
        # float: two copies, so the projection never transposes at run time
        table, proj = g.const(emb, "embed"), g.const(emb.T.copy(), "proj")
    tok = g.op("Gather", [table, "tokens"], axis=0)  # [1, 1, d]
    pos_idx = g.op("Slice", [g.op("Shape", ["self_k_0"]), g.const(np.array([2], np.int64)),
                             g.const(np.array([3], np.int64))])
    pos = g.op("Gather", [g.const(dd["position_encodings/encodings"].astype(np.float32)), pos_idx], axis=0)  # [1, d]
    x = g.op("Add", [tok, pos])
    inputs = [tensor("tokens", [1, 1], TensorProto.INT64)]
    outputs = []
    for i in range(n_dec):
        inputs += [tensor(f"self_k_{i}", [1, n_heads, "P", dh]), tensor(f"self_v_{i}", [1, n_heads, "P", dh])]
    for i in range(n_dec):
        inputs += [tensor(f"cross_k_{i}", [1, n_heads, dh, 1500]), tensor(f"cross_v_{i}", [1, n_heads, 1500, dh])]
    for i in range(n_dec):
        p = scope(dd, f"layer_{i}/self_attention/")
        h = g.layer_norm(x, p["layer_norm/gamma"], p["layer_norm/beta"])
        q, k, v = g.ops("Split", [g.linear(h, p["linear_0/weight"], p["linear_0/bias"])], 3, axis=2)
        ks = g.op("Concat", [f"self_k_{i}", g.heads(k, n_heads, dh)], axis=2)
        vs_ = g.op("Concat", [f"self_v_{i}", g.heads(v, n_heads, dh)], axis=2)
        g.nodes.append(helper.make_node("Identity", [ks], [f"new_self_k_{i}"]))
        g.nodes.append(helper.make_node("Identity", [vs_], [f"new_self_v_{i}"]))
        outputs += [untyped(f"new_self_k_{i}", 4), untyped(f"new_self_v_{i}", 4)]
        kt = g.op("Transpose", [ks], perm=[0, 1, 3, 2])
        a = g.attend(g.heads(q, n_heads, dh), kt, vs_, dh)
        x = g.op("Add", [x, g.linear(g.merge(a, d), p["linear_1/weight"], p["linear_1/bias"])])
        p = scope(dd, f"layer_{i}/attention/")
        h = g.layer_norm(x, p["layer_norm/gamma"], p["layer_norm/beta"])
        q = g.heads(g.linear(h, p["linear_0/weight"], p["linear_0/bias"]), n_heads, dh)
        a = g.attend(q, f"cross_k_{i}", f"cross_v_{i}", dh)
        x = g.op("Add", [x, g.linear(g.merge(a, d), p["linear_2/weight"], p["linear_2/bias"])])
        x = g.ffn(x, scope(dd, f"layer_{i}/ffn/"))
    x = g.layer_norm(x, dd["layer_norm/gamma"], dd["layer_norm/beta"])
    logits = g.op("MatMul", [x, proj])
    g.nodes.append(helper.make_node("Reshape", [logits, g.const(np.array([1, -1], np.int64))], ["logits"]))
    return g.model(inputs, [untyped("logits", 2)] + outputs, "whisper_decoder_step")


def main():
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    vs = read_ct2(src / "model.bin")
    n_heads = int(vs["encoder/num_heads"])
    n_dec = sum(1 for k in vs if k.startswith("decoder/layer_") and k.endswith("ffn/linear_0/weight"))
    onnx.save(frontend(), out / "frontend.onnx")
    for precision, int8 in (("fp32", False), ("int8", True)):
        onnx.save(encoder(vs, int8, n_heads, n_dec), out / f"encoder.{precision}.onnx")
        onnx.save(decoder(vs, int8, n_heads, n_dec), out / f"decoder.{precision}.onnx")
    config = json.loads((src / "config.json").read_text())
    (out / "generation.json").write_text(json.dumps({
        "suppress_ids": config["suppress_ids"], "suppress_ids_begin": config["suppress_ids_begin"],
    }))
    for f in sorted(out.iterdir()):
        print(f"{f.name}: {f.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
