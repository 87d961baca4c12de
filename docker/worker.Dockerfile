# The compression worker image (torch CPU): the job service by default, every `edgefer-worker` stage too.
#   docker build -f docker/worker.Dockerfile -t edgefer/worker:0.1.0 .
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 EDGEFER_WORK_DIR=/work/jobs
WORKDIR /app
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml setup.py README.md ./
COPY proto ./proto
COPY edgefer ./edgefer
COPY compression_worker ./compression_worker
COPY services ./services
RUN pip install '.[worker]' && useradd --create-home --uid 10001 edgefer && mkdir -p /work && chown edgefer /work
USER 10001
EXPOSE 9200
ENTRYPOINT ["edgefer-worker-service"]
