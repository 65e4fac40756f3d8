# IAIN server image: the CUDA build of torch (one GPU per inference worker), slides and
# pyramids mounted at /data. Build: docker build -t iain . ; run: docker run -p 8000:8000 -v $PWD/data:/data iain
FROM python:3.11-slim-bookworm
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
WORKDIR /app
RUN apt-get update \
    && apt-get install -y --no-install-recommends nodejs npm \
    && rm -rf /var/lib/apt/lists/*
# OpenSeadragon from the npm registry, exactly as the lock file pins it (served from node_modules)
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
RUN pip install torch==2.14.1 torchvision==0.29.1
COPY pyproject.toml README.md ./
COPY wsi wsi
COPY tiling tiling
COPY inference inference
COPY viewer viewer
COPY share share
COPY models models
# editable: viewer/ finds ../node_modules beside it, models/ finds its weights beside the cards
RUN pip install -e .
EXPOSE 8000
VOLUME ["/data"]
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["iain", "serve", "--host", "0.0.0.0", "--port", "8000", "--data", "/data"]
