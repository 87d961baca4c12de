# The edge node image: onnxruntime, OpenCV and gRPC only (no torch), for linux/amd64 and linux/arm64:
#   docker buildx build --platform linux/amd64,linux/arm64 -f docker/edge.Dockerfile -t edgefer/edge:0.1.0 .
# Also runs the device client (`edgefer-client`) and the operator CLI (`edgefer-registry`); the worker package is left out.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY proto ./proto
COPY edgefer ./edgefer
COPY services ./services
RUN pip install --prefix=/install .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 EDGEFER_MODEL_CACHE_DIR=/var/lib/edgefer/models EDGEFER_MODEL_PATH=/app/models/ean-pruned.onnx
COPY --from=build /install /usr/local
# The pruned EAN is what a board serves by default; the baseline stays in the image, selectable by EDGEFER_MODEL_PATH.
COPY models/ean-pruned.onnx models/ean-pruned.json models/ean-baseline.onnx models/ean-baseline.json /app/models/
RUN useradd --create-home --uid 10001 edgefer && mkdir -p /var/lib/edgefer/models && chown -R edgefer /var/lib/edgefer
USER 10001
WORKDIR /app
EXPOSE 50051 9100
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s CMD ["python", "-m", "services.edge.healthcheck", "127.0.0.1:50051"]
ENTRYPOINT ["edgefer-edge"]
