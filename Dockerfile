# IAIN server image. GPU build of torch; slides and pyramids are mounted at /data.
FROM python:3.11-slim-bookworm
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY wsi wsi
COPY tiling tiling
COPY inference inference
COPY viewer viewer
COPY share share
COPY models models
RUN pip install torch==2.14.1 torchvision==0.29.1 && pip install .
COPY package.json package-lock.json* ./
RUN if [ -f package.json ]; then npm ci --omit=dev; fi
EXPOSE 8000
VOLUME ["/data"]
CMD ["iain", "serve", "--host", "0.0.0.0", "--port", "8000", "--data", "/data"]
