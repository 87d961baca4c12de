"""The registry protocol shared by the compression worker, the operator CLI and every edge node (no torch).

Redis holds the truth: signed manifests and ONNX bytes per version, a desired record per fleet and a
status record per node. Pub/sub on the fleet's channel is only the doorbell that makes nodes look now
instead of at their next poll, so a node that missed a message still converges.
"""
