# The starload app image: `docker build -t starload .`, then `docker run --rm starload --help`.
# docker-compose.yml builds it for the producer and the loaders.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# The snowflake extra brings the Snowflake sink's dependencies (pip only warns while it does not exist).
RUN pip install ".[snowflake]"

# Run unprivileged; /data is where the DuckDB loader keeps its file (a named volume in compose
# takes this directory's owner on first use).
RUN useradd --create-home --uid 10001 starload && mkdir /data && chown starload:starload /data
USER starload
WORKDIR /data

ENTRYPOINT ["starload"]
CMD ["--help"]
