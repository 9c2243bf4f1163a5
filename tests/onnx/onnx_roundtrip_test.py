#!/usr/bin/python3
"""ONNX export checked by runtimes that are not epochal's.

Trains a short run, exports it with `epochal export RUN --format onnx`, and checks:
  * python3-onnx's checker (full check, with shape inference) passes, opset >= 13, and
    the graph has no Dropout and ends with Softmax;
  * OpenCV's DNN module (cv2.dnn.readNetFromONNX) gives, on the whole validation split,
    the same top-1 prediction as `epochal evaluate --logits-out` for every sample, and
    logits within 1e-4 (and probabilities that are the softmax of those logits);
  * a mangled weights file and a config that does not fit the weights give clear errors.
Exits 77 (skipped, with the reason) when python3-opencv, python3-onnx or the data are
missing.
"""
import argparse
import gzip
import os
import shutil
import struct
import subprocess
import sys
import tempfile

DATA = "/usr/share/datasets/fashion-mnist"
TOLERANCE = 1e-4


def skip(reason):
    print("SKIP: " + reason)
    sys.exit(77)


def fail(message):
    print("FAIL: " + message)
    sys.exit(1)


def run(cmd, expect=0):
    r = subprocess.run(["timeout", "-k", "10", "900"] + cmd, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    out = r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
    if (expect == 0) != (r.returncode == 0) or (expect and r.returncode != expect):
        fail("%s exited %d (expected %d):\n%s" % (" ".join(cmd), r.returncode, expect, out[-3000:]))
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochal", required=True)
    p.add_argument("--source", required=True)
    args = p.parse_args()
    try:
        import numpy as np
        import cv2
        import onnx
        import onnx.checker
    except ImportError as e:
        skip("%s (Debian python3-opencv, python3-onnx; scripts/bootstrap.sh)" % e)
    if not os.path.exists(os.path.join(DATA, "t10k-images-idx3-ubyte.gz")):
        skip("Fashion-MNIST is not installed (dataset-fashion-mnist)")

    config = os.path.join(args.source, "configs", "fashion_mnist_minivggnet.textproto")
    work = tempfile.mkdtemp(prefix="epochal_onnx.")
    try:
        out = os.path.join(work, "run")
        run([args.epochal, "train", "--config", config, "--epochs", "1", "--limit-train", "2000",
             "--limit-val", "500", "--no-scan", "--out", out])
        model_path = os.path.join(work, "model.onnx")
        print(run([args.epochal, "export", out, "--format", "onnx", "--out", model_path]).strip())

        # The reference: epochal evaluate on the whole validation split.
        weights = os.path.join(out, "weights.pb")
        logits_path = os.path.join(work, "logits.npy")
        evaluate = run([args.epochal, "evaluate", "--config", config, "--weights", weights,
                        "--logits-out", logits_path, "--json"])
        print(evaluate.strip())
        reference = np.load(logits_path)

        model = onnx.load(model_path)
        onnx.checker.check_model(model, full_check=True)
        opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        ops = [n.op_type for n in model.graph.node]
        if opset < 13:
            fail("opset %d < 13" % opset)
        if "Dropout" in ops or ops[-1] != "Softmax":
            fail("graph is not in inference form: %s" % ops)
        if "BatchNormalization" not in ops:
            fail("no BatchNormalization in %s" % ops)
        print("onnx checker: ok (opset %d, ops %s)" % (opset, " ".join(ops)))

        with gzip.open(os.path.join(DATA, "t10k-images-idx3-ubyte.gz"), "rb") as f:
            raw = f.read()
        n, h, w = struct.unpack(">III", raw[4:16])
        images = np.frombuffer(raw[16:], dtype=np.uint8).reshape(n, 1, h, w)
        if reference.shape[0] != n:
            fail("evaluate wrote %d rows for %d validation samples" % (reference.shape[0], n))
        # The exact quotients epochal uses (pixel / 255 in float32).
        table = (np.arange(256, dtype=np.float32) / np.float32(255)).astype(np.float32)

        net = cv2.dnn.readNetFromONNX(model_path)
        net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        logits = np.zeros_like(reference)
        probabilities = np.zeros_like(reference)
        batch = 500
        for first in range(0, n, batch):
            blob = table[images[first:first + batch]]
            net.setInput(blob, "input")
            prob, lg = net.forward(["probabilities", "logits"])
            logits[first:first + batch] = lg
            probabilities[first:first + batch] = prob
        top1_cv = logits.argmax(axis=1)
        top1_ref = reference.argmax(axis=1)
        disagree = int((top1_cv != top1_ref).sum())
        max_diff = float(np.abs(logits - reference).max())
        softmax = np.exp(reference - reference.max(axis=1, keepdims=True))
        softmax /= softmax.sum(axis=1, keepdims=True)
        prob_diff = float(np.abs(probabilities - softmax).max())
        labels = np.frombuffer(gzip.open(os.path.join(DATA, "t10k-labels-idx1-ubyte.gz")).read()[8:],
                               dtype=np.uint8)
        print("OpenCV %s vs epochal evaluate on %d validation samples: top-1 disagreements %d, "
              "max |logit difference| %.3g, max |probability difference| %.3g, accuracy %.4f "
              "(OpenCV) / %.4f (epochal)" %
              (cv2.__version__, n, disagree, max_diff, prob_diff, float((top1_cv == labels).mean()),
               float((top1_ref == labels).mean())))
        if disagree:
            fail("%d samples' top-1 predictions differ" % disagree)
        if max_diff > TOLERANCE:
            fail("logits differ by %.3g > %g" % (max_diff, TOLERANCE))
        if prob_diff > TOLERANCE:
            fail("probabilities differ by %.3g > %g" % (prob_diff, TOLERANCE))
        acc = float(evaluate.split('"val_accuracy": ')[1].split(",")[0])
        if abs(acc - float((top1_ref == labels).mean())) > 1e-12:
            fail("--logits-out's accuracy differs from evaluate's val_accuracy %.6f" % acc)

        # A mangled weights file: a clear error naming the file.
        mangled = os.path.join(work, "mangled.pb")
        data = open(weights, "rb").read()
        open(mangled, "wb").write(data[:len(data) // 3])
        msg = run([args.epochal, "export", "--weights", mangled, "--config", config,
                   "--format", "onnx", "--out", os.path.join(work, "x.onnx")], expect=2)
        if "mangled.pb" not in msg or "weights" not in msg:
            fail("mangled weights: unclear error: %s" % msg)
        print("mangled weights: " + msg.strip().splitlines()[-1])
        # Weights of another model: the error names the tensor.
        other = os.path.join(work, "other.textproto")
        open(other, "w").write(open(config).read().replace(
            'name: "fc1" dense { units: 512 }', 'name: "fc1" dense { units: 256 }'))
        msg = run([args.epochal, "export", "--weights", weights, "--config", other, "--format",
                   "onnx", "--out", os.path.join(work, "y.onnx")], expect=2)
        if "fc1" not in msg:
            fail("mismatched config: the error does not name the layer: %s" % msg)
        print("mismatched config: " + msg.strip().splitlines()[-1])
        if os.path.exists(os.path.join(work, "x.onnx")) or os.path.exists(os.path.join(work, "y.onnx")):
            fail("a failed export left a file behind")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("PASS")


if __name__ == "__main__":
    main()
