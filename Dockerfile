# One image for every role (api, worker, beat, migrate); docker-compose.yml picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OBLIVIATE_DATA_DIR=/var/lib/obliviate

# torch comes first, from PyTorch's own index: resolved from PyPI it would be a CUDA build of
# several GB. For GPU hosts build with e.g. --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

WORKDIR /opt/obliviate
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY workers ./workers
COPY migrations ./migrations
RUN pip install . && rm -rf build *.egg-info

RUN useradd --system --uid 10001 --home-dir /var/lib/obliviate obliviate \
    && mkdir -p /var/lib/obliviate/artifacts \
    && chown -R obliviate:obliviate /var/lib/obliviate
USER obliviate
WORKDIR /var/lib/obliviate
EXPOSE 8000

ENTRYPOINT ["obliviate"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
