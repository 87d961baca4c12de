# The compression worker: trains, distils, prunes and exports EAN models on CPU.
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
WORKDIR /app
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md ./
COPY edgefer ./edgefer
COPY compression_worker ./compression_worker
COPY services ./services
RUN pip install '.[worker]' && useradd --create-home --uid 10001 edgefer
USER edgefer
ENTRYPOINT ["edgefer-worker"]
CMD ["--help"]
