"""The edge runtime: everything an ARM node runs, on onnxruntime, OpenCV and numpy only."""
