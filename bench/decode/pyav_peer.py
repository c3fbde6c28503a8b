#!/usr/bin/env python3
"""The PyAV peer: the same decode, fps sampling, center crop, resize to SIZE
and rgb24 output, done the way a PyAV user would. Prints frames, seconds and
the CPU seconds of the decode loop."""
import json
import sys
import time

import av
import av.logging
import numpy as np


def run(paths, fps, size, threads):
    frames = 0
    for path in paths:
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_count = threads
            if threads > 1:
                stream.thread_type = "AUTO"  # frame threads too: PyAV's default is slice threads only
            rate = fps if fps else float(stream.average_rate)
            next_t = 0.0
            for frame in container.decode(stream):
                t = frame.time or 0.0
                if t + 1e-9 < next_t:
                    continue
                while next_t <= t + 1e-9:
                    next_t += 1.0 / rate
                w, h = frame.width, frame.height
                if w >= h:
                    sw, sh = round(w * size / h), size
                else:
                    sw, sh = size, round(h * size / w)
                rgb = frame.to_ndarray(width=sw, height=sh, format="rgb24")
                x, y = (sw - size) // 2, (sh - size) // 2
                window_frame = np.ascontiguousarray(rgb[y:y + size, x:x + size])
                frames += window_frame.shape[0] > 0
    return frames


def main():
    av.logging.set_level(av.logging.ERROR)  # libdav1d's version line per stream is noise
    fps = 0.0 if sys.argv[1] == "native" else float(sys.argv[1])
    size, threads, paths = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
    start, cpu_start = time.monotonic(), time.process_time()
    frames = run(paths, fps, size, threads)
    print(json.dumps({"frames": frames, "seconds": round(time.monotonic() - start, 4),
                      "cpu_seconds": round(time.process_time() - cpu_start, 4)}))


if __name__ == "__main__":
    main()
