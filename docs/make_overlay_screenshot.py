"""The overlay screenshot of the docs (docs/overlay.jpg): a trained model through the runtime on synthetic
640x480 frames.

    python docs/make_overlay_screenshot.py models/default/model.onnx docs/overlay.jpg 0,4

Synthetic frames (edgeseg.core.synthetic, seed 5), so no ISIC pixels go into git; the model (trained on real ISIC
images) is the one named.
"""

import sys

import cv2
import numpy as np

from edgeseg.core.drawing import HudInfo, OverlayRenderer
from edgeseg.core.synthetic import make_sample
from edgeseg.runtime.backends import open_segmenter

model = sys.argv[1]
tiles = []
with open_segmenter(model, backend="onnxruntime-cpu", mm_per_px=0.02) as segmenter:
    renderer = OverlayRenderer()
    for index in (int(i) for i in sys.argv[3].split(",")):
        bgr, _ = make_sample(5, index, 640)
        frame = np.ascontiguousarray(bgr[80:560])
        for _ in range(3):
            result = segmenter.segment(frame)
        latency = sum(result.timings_ms.values())
        tiles.append(
            renderer.render(
                frame, result, HudInfo(1000 / latency, latency, segmenter.backend.name, segmenter.backend.precision)
            ).copy()
        )
sheet = np.hstack(tiles)
cv2.imwrite(sys.argv[2], sheet, [cv2.IMWRITE_JPEG_QUALITY, 85])
print(sheet.shape)
