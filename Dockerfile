# raftkvd: one node per container. The cluster file is mounted (or baked in by a derived
# image) at /etc/raftkvd/cluster.toml and RAFTKVD_ID picks the node; see docker-compose.yml.
# With [security], mount the node's keys, certificate and tokens read-only too (README
# "Security"), its secret files mode 0600 and owned by uid 10001, the user it runs as.
#   docker build -t raftkv .
#   docker run -e RAFTKVD_ID=1 -v "$PWD/conf/my-cluster.toml:/etc/raftkvd/cluster.toml:ro" raftkv
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed uid/gid, so that volume and bind-mount ownership is predictable.
RUN groupadd --system --gid 10001 raftkvd \
    && useradd --system --uid 10001 --gid raftkvd --home-dir /var/lib/raftkvd \
       --no-create-home --shell /usr/sbin/nologin raftkvd \
    && install -d -o raftkvd -g raftkvd -m 0700 /var/lib/raftkvd \
    && install -d -m 0755 /etc/raftkvd

WORKDIR /src
COPY pyproject.toml README.md ./
COPY raftkvd ./raftkvd
COPY raftctl ./raftctl
RUN pip install . && rm -rf /src

ENV RAFTKVD_CONFIG=/etc/raftkvd/cluster.toml
USER raftkvd
WORKDIR /var/lib/raftkvd
VOLUME /var/lib/raftkvd
# raft (peers), raftctl client protocol, HTTP (REST, /metrics, web view) of nodes 1-3
EXPOSE 20051-20053 20061-20063 8080-8082

# Healthy = this node's /health is 200: it is up and knows a leader.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "raftkvd.healthcheck"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["raftkvd", "run"]
