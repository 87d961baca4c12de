# The edge node image: onnxruntime, OpenCV and gRPC only (no torch), for linux/amd64 and linux/arm64:
#   docker buildx build --platform linux/amd64,linux/arm64 -f docker/edge.Dockerfile -t edgefer/edge:0.1.0 .
# and, as the stage `controller`, the fleet's rollout controller: the same package with scipy for its statistics,
# which the boards never need (it runs centrally, next to Redis):
#   docker build -f docker/edge.Dockerfile --target controller -t edgefer/controller:0.1.0 .
#   make images / make image-check (podman or docker; a clean export of HEAD, checked from outside)
# Also runs the device client (`edgefer-client`) and the operator CLI (`edgefer-registry`); the worker package is left out.
# Every package version comes from docker/constraints.txt (the set the tests passed with).
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_CONSTRAINT=/src/docker/constraints.txt
WORKDIR /src
COPY docker/constraints.txt ./docker/
COPY pyproject.toml setup.py README.md ./
COPY proto ./proto
COPY edgefer ./edgefer
COPY services ./services
RUN pip install --prefix=/install . && python -c "import sys; sys.path.insert(0, '/install/lib/python3.11/site-packages'); import edgefer.v1.edge_pb2_grpc"

FROM build AS controller-build
RUN pip install --prefix=/controller '.[rollouts]'

FROM python:3.11-slim AS controller
ENV PYTHONUNBUFFERED=1
COPY --from=controller-build /controller /usr/local
RUN useradd --create-home --uid 10001 edgefer && python -c "import scipy.stats, edgefer.rollouts.controller"
USER 10001
EXPOSE 9300
ENTRYPOINT ["edgefer-rollouts"]

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 EDGEFER_MODEL_CACHE_DIR=/var/lib/edgefer/models EDGEFER_MODEL_PATH=/app/models/ean-pruned.onnx
COPY --from=build /install /usr/local
# The pruned EAN is what a board serves by default; the baseline stays in the image, selectable by EDGEFER_MODEL_PATH.
COPY models/ean-pruned.onnx models/ean-pruned.json models/ean-baseline.onnx models/ean-baseline.json /app/models/
# /var/lib/edgefer/keys: where compose's keygen service writes the fleet's key pair (a volume owned by this user).
RUN useradd --create-home --uid 10001 edgefer && mkdir -p /var/lib/edgefer/models /var/lib/edgefer/keys \
    && chown -R edgefer /var/lib/edgefer
USER 10001
WORKDIR /app
EXPOSE 50051 9100
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s CMD ["python", "-m", "services.edge.healthcheck", "127.0.0.1:50051"]
ENTRYPOINT ["edgefer-edge"]
