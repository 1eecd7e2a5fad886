#!/usr/bin/env python3
"""Reference NanoDet pipeline in Python (OpenCV decode + onnxruntime), the way a Kerberos-style
Python consumer runs a model. Used by Osprey's tests as a correctness reference and by the
benchmark as the baseline.

    nanodet.py MODEL VIDEO --frames 0,100,200        JSON detections for those frames
    nanodet.py MODEL VIDEO --every 5 --bench         frames/s over the video, JSON summary
    nanodet.py MODEL - --tensors T.f32 --meta M.json inference + decoding on given input tensors

Preprocessing and decoding mirror Osprey's: letterbox into 416x416 (scaled to fit, top-left,
padding = the mean colour, i.e. 0 after normalisation), BGR, (x - mean) / std, NCHW; six outputs
(class scores and 4x11 box bins for strides 8/16/32), softmax over bins, class-aware NMS.
"""
import argparse, json, sys, time
import cv2
import numpy as np
import onnxruntime as ort

SIZE = 416
MEAN = np.array([103.53, 116.28, 123.675], np.float32)
STD = np.array([57.375, 57.12, 58.395], np.float32)
BINS = 11


def letterbox(frame):
    h, w = frame.shape[:2]
    scale = min(SIZE / w, SIZE / h)
    nw, nh = round(w * scale), round(h * scale)
    resized = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
    x = np.zeros((3, SIZE, SIZE), np.float32)
    norm = (resized.astype(np.float32) - MEAN) / STD
    x[:, :nh, :nw] = norm.transpose(2, 0, 1)
    return x[None], scale


def decode(outputs, scale, width, height, threshold, iou):
    levels = {}
    for out in outputs:
        n, last = out.shape[1], out.shape[2]
        levels.setdefault(n, {})["cls" if last == 80 else "reg"] = out[0]
    boxes, scores, classes = [], [], []
    for n, level in levels.items():
        side = int(round(n ** 0.5))
        stride = SIZE // side
        cls, reg = level["cls"], level["reg"]
        best = cls.argmax(1)
        score = cls[np.arange(n), best]
        keep = np.nonzero(score >= threshold)[0]
        if len(keep) == 0:
            continue
        bins = reg[keep].reshape(-1, 4, BINS)
        bins = np.exp(bins - bins.max(2, keepdims=True))
        bins /= bins.sum(2, keepdims=True)
        dist = (bins * np.arange(BINS, dtype=np.float32)).sum(2) * stride
        cx = (keep % side + 0.5) * stride
        cy = (keep // side + 0.5) * stride
        b = np.stack([cx - dist[:, 0], cy - dist[:, 1], cx + dist[:, 2], cy + dist[:, 3]], 1) / scale
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, width)
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, height)
        boxes.append(b); scores.append(score[keep]); classes.append(best[keep])
    if not boxes:
        return []
    boxes, scores, classes = np.concatenate(boxes), np.concatenate(scores), np.concatenate(classes)
    result = []
    for c in np.unique(classes):
        idx = np.nonzero(classes == c)[0]
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        while len(idx):
            i = idx[0]
            result.append((int(c), float(scores[i]), boxes[i]))
            rest = idx[1:]
            xx1 = np.maximum(boxes[i, 0], boxes[rest, 0]); yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
            xx2 = np.minimum(boxes[i, 2], boxes[rest, 2]); yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
            inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
            area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
            idx = rest[inter / (area(boxes[i]) + area(boxes[rest]) - inter + 1e-9) <= iou]
    result.sort(key=lambda r: -r[1])
    return [{"class_id": c, "score": s, "box": [float(v) for v in b]} for c, s, b in result]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model"); p.add_argument("video")
    p.add_argument("--frames", default="")
    p.add_argument("--every", type=int, default=0)
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--iou", type=float, default=0.6)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--bench", action="store_true")
    p.add_argument("--tensors", help="raw float32 [n,3,416,416] inputs instead of decoding VIDEO")
    p.add_argument("--meta", help="JSON list of {frame, scale, width, height}, one per tensor")
    a = p.parse_args()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = a.threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(a.model, opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    if a.tensors:
        meta = json.load(open(a.meta))
        tensors = np.fromfile(a.tensors, np.float32).reshape(len(meta), 1, 3, SIZE, SIZE)
        results = [{"frame": m["frame"], "detections": decode(session.run(None, {name: t}), m["scale"], m["width"],
                                                               m["height"], a.threshold, a.iou)}
                   for t, m in zip(tensors, meta)]
        json.dump(results, sys.stdout)
        print()
        return
    wanted = {int(f) for f in a.frames.split(",") if f}
    cap = cv2.VideoCapture(a.video)
    index, results, analysed = 0, [], 0
    start = time.perf_counter()
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if (a.every and index % a.every == 0) or index in wanted:
            x, scale = letterbox(frame)
            dets = decode(session.run(None, {name: x}), scale, frame.shape[1], frame.shape[0], a.threshold, a.iou)
            analysed += 1
            if not a.bench:
                results.append({"frame": index, "detections": dets})
        index += 1
    elapsed = time.perf_counter() - start
    if a.bench:
        json.dump({"frames_decoded": index, "frames_analysed": analysed, "seconds": elapsed,
                   "fps": analysed / elapsed}, sys.stdout)
    else:
        json.dump(results, sys.stdout)
    print()


if __name__ == "__main__":
    main()
