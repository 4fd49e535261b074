# One image for every novalog role; docker-compose.yml picks the role with `novalog run ROLE`.
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends libvirt-dev pkg-config gcc qemu-utils \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY novalog ./novalog
COPY producers ./producers
COPY consumers ./consumers
COPY projections ./projections
RUN pip install --no-cache-dir .
ENTRYPOINT []
CMD ["novalog", "--help"]
