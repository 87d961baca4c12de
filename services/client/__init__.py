"""The device client: streams camera, video or image-folder frames to an edge node."""
