#!/usr/bin/env python3
"""Export the real-size models of the `reinit verify` benchmark (random init, no
downloads) as ONNX into OUT_DIR (default /tmp/verify-models; never committed).

    python3 benches/verify/export_models.py [OUT_DIR] [--only resnet50,bert_base]

CNNs come from torchvision (weights=None) at 224x224 (Inception-v3 at 299x299),
exported by the TorchScript exporter in TrainingMode.TRAINING without constant
folding, so BatchNormalization stays in the graph as it is in PyTorch training;
batch axis dynamic. ViT-B/16 (torchvision) and BERT-base (transformers
BertModel with its default config, input_ids only, sequence 128) likewise.
`MODELS` maps each name to its per-sample input shape, used by run.py.

Variants (not in the default set; `--only NAME`):
  resnet18_nonorm  ResNet-18 exported in eval mode with constant folding: every
                   BatchNormalization folded into its conv, so no normalization
                   is left (the no-normalization acceptance of issue 14)
  resnet34_nonorm  ResNet-34 the same way: 16 basic blocks against ResNet-18's 8
                   (He's blow-up without normalization grows with the blocks)
  resnet18_dynamo  ResNet-18 by the dynamo exporter (torch.onnx.export(dynamo=True))
  bert_base_dynamo BERT-base by the dynamo exporter
  bert_base_ort    bert_base.onnx after onnxruntime.transformers' BERT optimizer
                   (com.microsoft Attention, SkipLayerNormalization, BiasGelu ...)
"""
import argparse
import os
import sys

import torch

# name -> (per-sample input shape, input dtype)
MODELS = {
    "squeezenet": ((3, 224, 224), "float"),
    "resnet18": ((3, 224, 224), "float"),
    "resnet50": ((3, 224, 224), "float"),
    "mobilenet_v2": ((3, 224, 224), "float"),
    "densenet121": ((3, 224, 224), "float"),
    "resnext50": ((3, 224, 224), "float"),
    "googlenet": ((3, 224, 224), "float"),
    "inception_v3": ((3, 299, 299), "float"),
    "vit_b_16": ((3, 224, 224), "float"),
    "bert_base": ((128,), "tokens"),
}


def build(name):
    """The torch module (train mode) for `name`."""
    import torchvision.models as tv

    torch.manual_seed(0)
    if name == "bert_base":
        from transformers import BertConfig, BertModel

        class Bert(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.bert = BertModel(BertConfig())

            def forward(self, input_ids):
                return self.bert(input_ids=input_ids).last_hidden_state

        return Bert()
    ctor = {
        "squeezenet": lambda: tv.squeezenet1_0(weights=None),
        "resnet18": lambda: tv.resnet18(weights=None),
        "resnet34": lambda: tv.resnet34(weights=None),
        "resnet50": lambda: tv.resnet50(weights=None),
        "mobilenet_v2": lambda: tv.mobilenet_v2(weights=None),
        "densenet121": lambda: tv.densenet121(weights=None),
        "resnext50": lambda: tv.resnext50_32x4d(weights=None),
        "googlenet": lambda: tv.googlenet(weights=None, aux_logits=False, init_weights=True),
        "inception_v3": lambda: tv.inception_v3(weights=None, aux_logits=False, init_weights=True),
        "vit_b_16": lambda: tv.vit_b_16(weights=None),
    }[name]
    return ctor()


def example(name, batch=2):
    # resnet34 is only exported as the resnet34_nonorm variant
    shape, kind = MODELS.get(name, ((3, 224, 224), "float"))
    if kind == "tokens":
        return torch.randint(0, 30522, (batch, *shape))
    return torch.randn(batch, *shape)


VARIANTS = {
    "resnet18_nonorm": ("resnet18", "fold"),
    "resnet34_nonorm": ("resnet34", "fold"),
    "resnet18_dynamo": ("resnet18", "dynamo"),
    "bert_base_dynamo": ("bert_base", "dynamo"),
    "bert_base_ort": ("bert_base", "ort"),
}


def export_variant(variant, out_dir):
    name, how = VARIANTS[variant]
    path = os.path.join(out_dir, f"{variant}.onnx")
    input_name = "input_ids" if MODELS.get(name, (None, ""))[1] == "tokens" else "input"
    if how == "fold":
        torch.onnx.export(
            build(name).eval(), (example(name),), path, dynamo=False, opset_version=17,
            input_names=[input_name], output_names=["output"],
            dynamic_axes={input_name: {0: "batch"}, "output": {0: "batch"}},
            training=torch.onnx.TrainingMode.EVAL, do_constant_folding=True,
        )
    elif how == "dynamo":
        batch = torch.export.Dim("batch", min=1, max=1024)
        program = torch.onnx.export(
            build(name).train(), (example(name),), dynamo=True,
            input_names=[input_name], output_names=["output"],
            # keys are the forward's argument names
            dynamic_shapes={"input_ids": {0: batch}} if name == "bert_base" else {"x": {0: batch}},
        )
        program.save(path)
    elif how == "ort":
        from onnxruntime.transformers import optimizer

        base = os.path.join(out_dir, "bert_base.onnx")
        if not os.path.exists(base):
            export("bert_base", out_dir)
        opt = optimizer.optimize_model(base, model_type="bert", num_heads=12, hidden_size=768)
        opt.save_model_to_file(path)
    print(f"{path}: {os.path.getsize(path) / 2**20:.1f} MiB", flush=True)


def export(name, out_dir):
    if name in VARIANTS:
        return export_variant(name, out_dir)
    model = build(name).train()
    x = example(name)
    path = os.path.join(out_dir, f"{name}.onnx")
    input_name = "input_ids" if MODELS[name][1] == "tokens" else "input"
    torch.onnx.export(
        model, (x,), path, dynamo=False, opset_version=17,
        input_names=[input_name], output_names=["output"],
        dynamic_axes={input_name: {0: "batch"}, "output": {0: "batch"}},
        training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False,
    )
    print(f"{path}: {os.path.getsize(path) / 2**20:.1f} MiB", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir", nargs="?", default="/tmp/verify-models")
    ap.add_argument("--only", default=",".join(MODELS))
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    for name in args.only.split(","):
        export(name, args.out_dir)


if __name__ == "__main__":
    sys.exit(main())
