# The compression worker image (torch CPU): the job service by default, every `edgefer-worker` stage too.
#   docker build -f docker/worker.Dockerfile -t edgefer/worker:0.1.0 .
# Where torch comes from is a build argument: the PyTorch CPU index by default; a mirror with
#   --build-arg TORCH_INDEX_URL=https://mirror.example/whl/cpu
# the CUDA variant for a GPU node (k8s/overlays/gpu-worker, tag 0.1.0-cuda) with
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
# or a folder of wheels (mounted into the build) with the default index for the rest:
#   --build-arg TORCH_INDEX_URL= --build-arg TORCH_FIND_LINKS=/opt/wheels -v /opt/wheels:/opt/wheels:ro
# Every other package version comes from docker/constraints.txt (the set the tests passed with).
FROM python:3.11-slim
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_FIND_LINKS=
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 EDGEFER_WORK_DIR=/work/jobs PIP_CONSTRAINT=/app/docker/constraints.txt
WORKDIR /app
COPY docker/constraints.txt ./docker/
RUN pip install ${TORCH_FIND_LINKS:+--find-links "$TORCH_FIND_LINKS"} ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} \
    "torch==${TORCH_VERSION}"
COPY pyproject.toml setup.py README.md ./
COPY proto ./proto
COPY edgefer ./edgefer
COPY compression_worker ./compression_worker
COPY services ./services
# The shipped models, so `edgefer-registry publish /app/models/ean-pruned.onnx` works in the container.
COPY models/*.onnx models/*.json ./models/
COPY models/teachers ./models/teachers
RUN pip install '.[worker]' && python -c "import edgefer.v1.edge_pb2_grpc, torch_pruning" \
    && useradd --create-home --uid 10001 edgefer && mkdir -p /work && chown edgefer /work
USER 10001
EXPOSE 9200
ENTRYPOINT ["edgefer-worker-service"]
