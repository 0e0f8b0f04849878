#!/usr/bin/env python3
"""Generate the end-to-end benchmark models (random float32 weights, real layer shapes).

* resnet50.onnx   ResNet-50 (torchvision v1.5 layout): stem 7x7/2 conv + BN + ReLU + 3x3/2
                  max-pool, bottlenecks [3, 4, 6, 3] (1x1 / 3x3 stride / 1x1 expand x4, BN
                  after every conv, projection shortcut conv+BN on each stage's first block),
                  global average pool, Gemm 2048->1000 (transB=1).  25.56 M params, ~102 MB.
* bert_base.onnx  BERT-base encoder: word (30522x768) / position (512x768) / token-type
                  (2x768) embeddings + LayerNorm; 12 layers of hidden 768, 12 heads, FFN 3072,
                  Q/K/V/out/FFN as MatMul(X, W[in, out]) + Add(bias) as PyTorch exports them,
                  GELU in the erf form, post-LN; pooler MatMul + Tanh.  ~109.5 M params, ~438 MB.
* gpt_ext/gpt_ext.onnx (+ gpt_ext.onnx.data)
                  GPT-2-medium-width decoder stack, deeper: hidden 1024, 40 layers, fused QKV
                  MatMul 1024x3072, out proj 1024x1024, FFN 1024x4096 / 4096x1024, pre-LN,
                  wte 50257x1024 + wpe 1024x1024, untied lm_head MatMul 1024x50257; all tensors
                  in one external data file via onnx.save_model(save_as_external_data=True).
                  ~607 M params, ~2.43 GB (> 2 GiB, beyond the protobuf limit).

Every graph passes onnx.checker (full_check for the two in-memory models; the path form for
the external-data model).  Usage:

    python3 benches/e2e/make_models.py OUT_DIR [--only resnet50,bert_base,gpt_ext]
"""
import argparse
import os
import sys
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class Builder:
    def __init__(self, seed):
        self.nodes = []
        self.inits = []
        self.rng = np.random.default_rng(seed)
        self.n = 0

    def name(self, prefix):
        self.n += 1
        return f"{prefix}_{self.n}"

    def weight(self, name, shape, std=0.02):
        a = self.rng.standard_normal(shape, dtype=np.float32)
        a *= np.float32(std)
        self.inits.append(numpy_helper.from_array(a, name))
        return name

    def const(self, name, array):
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op, inputs, name, n_out=1, **attrs):
        outs = [f"{name}_out{k}" if n_out > 1 else f"{name}_out" for k in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        return outs if n_out > 1 else outs[0]


# ---------------------------------------------------------------- ResNet-50


def resnet50(seed=0):
    b = Builder(seed)

    def conv_bn(x, prefix, c_in, c_out, k, stride, relu):
        w = b.weight(f"{prefix}.conv.weight", (c_out, c_in, k, k), std=np.sqrt(2.0 / (c_in * k * k)))
        y = b.node("Conv", [x, w], f"{prefix}/Conv", kernel_shape=[k, k], strides=[stride, stride],
                   pads=[k // 2] * 4)
        scale = b.const(f"{prefix}.bn.weight", np.ones(c_out, np.float32))
        bias = b.const(f"{prefix}.bn.bias", np.zeros(c_out, np.float32))
        mean = b.const(f"{prefix}.bn.running_mean", np.zeros(c_out, np.float32))
        var = b.const(f"{prefix}.bn.running_var", np.ones(c_out, np.float32))
        y = b.node("BatchNormalization", [y, scale, bias, mean, var], f"{prefix}/BatchNormalization",
                   epsilon=1e-5)
        if relu:
            y = b.node("Relu", [y], f"{prefix}/Relu")
        return y

    x = "input"
    y = conv_bn(x, "conv1", 3, 64, 7, 2, True)
    y = b.node("MaxPool", [y], "maxpool/MaxPool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    c_in = 64
    for stage, (blocks, width) in enumerate(zip([3, 4, 6, 3], [64, 128, 256, 512]), start=1):
        for blk in range(blocks):
            p = f"layer{stage}.{blk}"
            stride = 2 if (blk == 0 and stage > 1) else 1
            c_out = width * 4
            h = conv_bn(y, f"{p}.1", c_in, width, 1, 1, True)
            h = conv_bn(h, f"{p}.2", width, width, 3, stride, True)
            h = conv_bn(h, f"{p}.3", width, c_out, 1, 1, False)
            if blk == 0:
                short = conv_bn(y, f"{p}.downsample", c_in, c_out, 1, stride, False)
            else:
                short = y
            y = b.node("Add", [h, short], f"{p}/Add")
            y = b.node("Relu", [y], f"{p}/Relu")
            c_in = c_out
    y = b.node("GlobalAveragePool", [y], "avgpool/GlobalAveragePool")
    y = b.node("Flatten", [y], "Flatten", axis=1)
    w = b.weight("fc.weight", (1000, 2048), std=1 / np.sqrt(2048))
    bias = b.weight("fc.bias", (1000,), std=1 / np.sqrt(2048))
    y = b.node("Gemm", [y, w, bias], "fc/Gemm", transB=1)
    b.nodes[-1].output[0] = "logits"
    graph = helper.make_graph(
        b.nodes, "resnet50",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])],
        b.inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                             producer_name="reinit-bench")


# ---------------------------------------------------------------- transformers


def linear(b, x, prefix, d_in, d_out):
    """MatMul(X, W[d_in, d_out]) + Add(bias), as torch.onnx exports nn.Linear on 3-D input."""
    w = b.weight(f"{prefix}.weight", (d_in, d_out), std=0.02)
    bias = b.const(f"{prefix}.bias", np.zeros(d_out, np.float32))
    y = b.node("MatMul", [x, w], f"{prefix}/MatMul")
    return b.node("Add", [bias, y], f"{prefix}/Add")


def layer_norm(b, x, prefix, d):
    g = b.const(f"{prefix}.weight", np.ones(d, np.float32))
    beta = b.const(f"{prefix}.bias", np.zeros(d, np.float32))
    return b.node("LayerNormalization", [x, g, beta], f"{prefix}/LayerNormalization", axis=-1,
                  epsilon=1e-5)


def gelu_erf(b, x, prefix):
    sqrt2 = b.const(f"{prefix}.sqrt2", np.array(np.sqrt(2.0), np.float32))
    one = b.const(f"{prefix}.one", np.array(1.0, np.float32))
    half = b.const(f"{prefix}.half", np.array(0.5, np.float32))
    t = b.node("Div", [x, sqrt2], f"{prefix}/Div")
    t = b.node("Erf", [t], f"{prefix}/Erf")
    t = b.node("Add", [t, one], f"{prefix}/Add")
    t = b.node("Mul", [x, t], f"{prefix}/Mul")
    return b.node("Mul", [t, half], f"{prefix}/Mul_1")


def attention(b, q, k, v, prefix, heads, d_head, causal_len=None):
    split = b.const(f"{prefix}.heads_shape", np.array([0, 0, heads, d_head], np.int64))
    merge = b.const(f"{prefix}.merge_shape", np.array([0, 0, heads * d_head], np.int64))

    def to_heads(t, tag, perm):
        t = b.node("Reshape", [t, split], f"{prefix}/Reshape_{tag}")
        return b.node("Transpose", [t], f"{prefix}/Transpose_{tag}", perm=perm)

    q = to_heads(q, "q", [0, 2, 1, 3])
    k = to_heads(k, "k", [0, 2, 3, 1])
    v = to_heads(v, "v", [0, 2, 1, 3])
    scale = b.const(f"{prefix}.scale", np.array(np.sqrt(d_head), np.float32))
    s = b.node("MatMul", [q, k], f"{prefix}/MatMul_qk")
    s = b.node("Div", [s, scale], f"{prefix}/Div")
    s = b.node("Softmax", [s], f"{prefix}/Softmax", axis=-1)
    o = b.node("MatMul", [s, v], f"{prefix}/MatMul_v")
    o = b.node("Transpose", [o], f"{prefix}/Transpose_o", perm=[0, 2, 1, 3])
    return b.node("Reshape", [o, merge], f"{prefix}/Reshape_o")


def bert_base(seed=1, layers=12, d=768, heads=12, ffn=3072, vocab=30522, max_pos=512, seq=128):
    b = Builder(seed)
    ids = "input_ids"
    tt = "token_type_ids"
    we = b.weight("embeddings.word_embeddings.weight", (vocab, d))
    pe = b.weight("embeddings.position_embeddings.weight", (max_pos, d))
    te = b.weight("embeddings.token_type_embeddings.weight", (2, d))
    pos = b.const("embeddings.position_ids", np.arange(seq, dtype=np.int64)[None, :])
    x = b.node("Gather", [we, ids], "embeddings/word/Gather")
    p = b.node("Gather", [pe, pos], "embeddings/position/Gather")
    t = b.node("Gather", [te, tt], "embeddings/token_type/Gather")
    x = b.node("Add", [x, t], "embeddings/Add")
    x = b.node("Add", [x, p], "embeddings/Add_1")
    x = layer_norm(b, x, "embeddings.LayerNorm", d)
    for i in range(layers):
        p = f"encoder.layer.{i}"
        q = linear(b, x, f"{p}.attention.self.query", d, d)
        k = linear(b, x, f"{p}.attention.self.key", d, d)
        v = linear(b, x, f"{p}.attention.self.value", d, d)
        a = attention(b, q, k, v, f"{p}.attention.self", heads, d // heads)
        a = linear(b, a, f"{p}.attention.output.dense", d, d)
        x = b.node("Add", [a, x], f"{p}.attention.output/Add")
        x = layer_norm(b, x, f"{p}.attention.output.LayerNorm", d)
        h = linear(b, x, f"{p}.intermediate.dense", d, ffn)
        h = gelu_erf(b, h, f"{p}.intermediate.gelu")
        h = linear(b, h, f"{p}.output.dense", ffn, d)
        x = b.node("Add", [h, x], f"{p}.output/Add")
        x = layer_norm(b, x, f"{p}.output.LayerNorm", d)
    first = b.const("pooler.first_index", np.array(0, np.int64))
    cls = b.node("Gather", [x, first], "pooler/Gather", axis=1)
    pooled = linear(b, cls, "pooler.dense", d, d)
    pooled = b.node("Tanh", [pooled], "pooler/Tanh")
    b.nodes[-1].output[0] = "pooler_output"
    graph = helper.make_graph(
        b.nodes, "bert_base",
        [helper.make_tensor_value_info(ids, TensorProto.INT64, ["N", seq]),
         helper.make_tensor_value_info(tt, TensorProto.INT64, ["N", seq])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", seq, d]),
         helper.make_tensor_value_info("pooler_output", TensorProto.FLOAT, ["N", d])],
        b.inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                             producer_name="reinit-bench")


def gpt_ext(seed=2, layers=40, d=1024, heads=16, ffn=4096, vocab=50257, ctx=1024, seq=128):
    b = Builder(seed)
    ids = "input_ids"
    wte = b.weight("transformer.wte.weight", (vocab, d))
    wpe = b.weight("transformer.wpe.weight", (ctx, d), std=0.01)
    pos = b.const("transformer.position_ids", np.arange(seq, dtype=np.int64)[None, :])
    x = b.node("Gather", [wte, ids], "wte/Gather")
    p = b.node("Gather", [wpe, pos], "wpe/Gather")
    x = b.node("Add", [x, p], "embed/Add")
    for i in range(layers):
        pre = f"transformer.h.{i}"
        h = layer_norm(b, x, f"{pre}.ln_1", d)
        qkv = linear(b, h, f"{pre}.attn.c_attn", d, 3 * d)
        split = b.const(f"{pre}.attn.split", np.array([d, d, d], np.int64))
        q, k, v = b.node("Split", [qkv, split], f"{pre}.attn/Split", n_out=3, axis=-1)
        a = attention(b, q, k, v, f"{pre}.attn", heads, d // heads)
        a = linear(b, a, f"{pre}.attn.c_proj", d, d)
        x = b.node("Add", [x, a], f"{pre}/Add")
        h = layer_norm(b, x, f"{pre}.ln_2", d)
        h = linear(b, h, f"{pre}.mlp.c_fc", d, ffn)
        h = gelu_erf(b, h, f"{pre}.mlp.gelu")
        h = linear(b, h, f"{pre}.mlp.c_proj", ffn, d)
        x = b.node("Add", [x, h], f"{pre}/Add_1")
    x = layer_norm(b, x, "transformer.ln_f", d)
    w = b.weight("lm_head.weight", (d, vocab))
    b.node("MatMul", [x, w], "lm_head/MatMul")
    b.nodes[-1].output[0] = "logits"
    graph = helper.make_graph(
        b.nodes, "gpt_ext",
        [helper.make_tensor_value_info(ids, TensorProto.INT64, ["N", seq])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", seq, vocab])],
        b.inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                             producer_name="reinit-bench")


def params(model):
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type == TensorProto.FLOAT)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--only", default="resnet50,bert_base,gpt_ext")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    want = args.only.split(",")
    for name, build in [("resnet50", resnet50), ("bert_base", bert_base)]:
        if name not in want:
            continue
        t = time.time()
        m = build()
        onnx.checker.check_model(m, full_check=True)
        path = os.path.join(args.out, f"{name}.onnx")
        onnx.save_model(m, path)
        print(f"{path}: {params(m) / 1e6:.2f} M params, {os.path.getsize(path) / 1e6:.1f} MB "
              f"({time.time() - t:.1f} s)", flush=True)
        del m
    if "gpt_ext" in want:
        t = time.time()
        d = os.path.join(args.out, "gpt_ext")
        os.makedirs(d, exist_ok=True)
        m = gpt_ext()
        n = params(m)
        path = os.path.join(d, "gpt_ext.onnx")
        for f in (path, path + ".data"):
            if os.path.exists(f):
                os.remove(f)
        onnx.save_model(m, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location="gpt_ext.onnx.data", size_threshold=1024)
        del m
        onnx.checker.check_model(path)
        print(f"{path}: {n / 1e6:.2f} M params, {os.path.getsize(path) / 1e6:.2f} MB + "
              f"{os.path.getsize(path + '.data') / 1e9:.3f} GB data ({time.time() - t:.1f} s)",
              flush=True)


if __name__ == "__main__":
    sys.exit(main())
