#!/usr/bin/env python3
"""A clip whose tracking truth is known, made from the sample video.

The sample's background (the median of its frames, so the walkers vanish) gets real people cut
out of its frames (where a frame differs from that background), moved along known paths: two
that cross, one passing in front of another, people entering and leaving, one standing still,
and paths that span the boundary between the two 10 s chunks. Writes chunk-0.mp4 and
chunk-1.mp4 (H.264, 25 fps, a keyframe every 2 s) and truth.json: every person's box in every
frame, with how much of it is visible.

Usage: tracking-clip.py SAMPLE.mp4 OUT_DIR   (needs numpy and OpenCV: the reference venv)
"""
import json
import subprocess
import sys

import cv2
import numpy as np

FPS = 25
CHUNK_FRAMES = 250
CHUNKS = 2


def frames_of(path, every, limit):
    cap = cv2.VideoCapture(path)
    out, i = [], 0
    while len(out) < limit:
        ok, frame = cap.read()
        if not ok:
            break
        if i % every == 0:
            out.append(frame)
        i += 1
    return out


def sprites(frames, background, want):
    """People cut out of the frames: (BGR pixels, mask) of tall blobs unlike the background."""
    found = []
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    for frame in frames[::5]:
        diff = np.abs(frame.astype(np.int16) - background.astype(np.int16)).max(axis=2)
        mask = (diff > 40).astype(np.uint8)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel, iterations=2)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
        for c in range(1, n):
            x, y, w, h, area = stats[c]
            if not (80 <= h <= 150 and 25 <= w <= 70 and 1.8 <= h / w <= 4.0 and area > 0.45 * w * h):
                continue
            if x < 2 or y < 2 or x + w > frame.shape[1] - 2 or y + h > frame.shape[0] - 2:
                continue
            piece = (labels[y:y + h, x:x + w] == c).astype(np.uint8)
            found.append((frame[y:y + h, x:x + w].copy(), piece))
            if len(found) == want:
                return found
    if len(found) < want:
        sys.exit(f"only {len(found)} people found in the sample, {want} needed")
    return found


def lerp(a, b, u):
    return a + (b - a) * u


# Each person: (sprite, [(time s, x of box centre, y of box bottom), ...]); absent outside.
PATHS = [
    [(1.0, -40, 330), (16.0, 810, 330)],                  # across the whole clip, over the boundary
    [(2.0, 800, 350), (15.0, -40, 350)],                  # crosses the first, in front of it
    [(0.0, 600, 230), (7.5, 600, 230), (10.5, 810, 250)],  # stands, then leaves over the boundary
    [(10.5, 80, 170), (19.5, 560, 470)],                  # enters after the boundary, diagonal
    [(11.0, 800, 480), (19.8, 150, 200)],                 # crosses the fourth
    [(4.0, 300, -2), (9.8, 360, 300), (13.0, 380, 420)],  # comes in from the top, over the boundary
]


def where(path, t):
    for (t0, x0, y0), (t1, x1, y1) in zip(path, path[1:]):
        if t0 <= t <= t1:
            u = (t - t0) / (t1 - t0)
            return lerp(x0, x1, u), lerp(y0, y1, u)
    return None


def render(background, people, out_dir):
    height, width = background.shape[:2]
    truth = []
    writers = []
    for c in range(CHUNKS):
        cmd = ["ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24",
               "-s", f"{width}x{height}", "-r", str(FPS), "-i", "-", "-c:v", "libx264", "-preset", "fast",
               "-g", str(2 * FPS), "-pix_fmt", "yuv420p", f"{out_dir}/chunk-{c}.mp4"]
        writers.append(subprocess.Popen(cmd, stdin=subprocess.PIPE))
    for f in range(CHUNKS * CHUNK_FRAMES):
        t = f / FPS
        canvas = background.copy()
        owner = np.zeros((height, width), np.int16)  # who is seen at each pixel (0: nobody)
        placed = []
        for pid, ((pixels, mask), path) in enumerate(zip(people, PATHS), start=1):
            at = where(path, t)
            if at is None:
                continue
            h, w = mask.shape
            x1, y1 = int(round(at[0] - w / 2)), int(round(at[1] - h))
            placed.append((at[1], pid, x1, y1, pixels, mask))
        # Lower on the picture is nearer the camera: drawn last, in front.
        for _, pid, x1, y1, pixels, mask in sorted(placed):
            h, w = mask.shape
            sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x1 + w, width), min(y1 + h, height)
            if sx2 <= sx1 or sy2 <= sy1:
                continue
            m = mask[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1].astype(bool)
            region = canvas[sy1:sy2, sx1:sx2]
            region[m] = pixels[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1][m]
            owner[sy1:sy2, sx1:sx2][m] = pid
        for _, pid, x1, y1, pixels, mask in placed:
            h, w = mask.shape
            sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x1 + w, width), min(y1 + h, height)
            if sx2 <= sx1 or sy2 <= sy1:
                continue
            total = int(mask.sum())
            seen = int((owner[sy1:sy2, sx1:sx2] == pid).sum())
            truth.append({"id": pid, "frame": f, "box": [sx1, sy1, sx2, sy2], "visibility": round(seen / total, 3)})
        writers[f // CHUNK_FRAMES].stdin.write(canvas.tobytes())
    for w in writers:
        w.stdin.close()
        if w.wait() != 0:
            sys.exit("ffmpeg failed")
    return truth


def main():
    sample, out_dir = sys.argv[1], sys.argv[2]
    frames = frames_of(sample, every=4, limit=200)
    background = np.median(np.stack(frames), axis=0).astype(np.uint8)
    people = sprites(frames, background, len(PATHS))
    truth = render(background, people, out_dir)
    height, width = background.shape[:2]
    meta = {"fps": FPS, "chunk_frames": CHUNK_FRAMES, "chunks": CHUNKS, "width": width, "height": height,
            "objects": truth}
    with open(f"{out_dir}/truth.json", "w") as f:
        json.dump(meta, f)
    print(f"{out_dir}: {CHUNKS} chunks, {len(PATHS)} people, {len(truth)} boxes")


if __name__ == "__main__":
    main()
