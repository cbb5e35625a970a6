# The registry as a container image, a drop-in for Docker's registry:2 image:
#
#   docker build -t registry .
#   docker run -d -p 5000:5000 -v registry-data:/var/lib/registry registry
#
# BASE is any Debian-like image with python3 (3.11 or newer) and its venv module.
# The default needs Docker Hub; without a hub, make a base from Debian's packages
# (docs/operations.md):
#
#   mmdebstrap --variant=minbase --include=python3,python3-venv bookworm - \
#       | docker import - debian-python:bookworm
#   docker build --build-arg BASE=debian-python:bookworm -t registry .
#
# pip needs a package index while building: PyPI by default, or whatever the
# PIP_* build arguments name. Without PyPI in the build, make wheels on the host
# (the same Python version as the base's) and serve them on loopback:
#
#   pip wheel -w wheels 'setuptools>=77' .   # then: cd wheels && python3 -m http.server 8000
#   docker build --network host --build-arg PIP_NO_INDEX=1 \
#       --build-arg PIP_FIND_LINKS=http://127.0.0.1:8000/ -t registry .
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
# pip reads these from the environment; they live in this stage only, never in the image.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
ARG PIP_TRUSTED_HOST
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md /src/
COPY registry /src/registry
COPY tools /src/tools
# The project and its dependencies, no test extras, in a venv the image copies whole.
RUN python3 -m venv /opt/registry \
 && /opt/registry/bin/pip install /src \
 && /opt/registry/bin/registry --version

FROM ${BASE}
ARG UID=1000
ARG GID=1000
LABEL org.opencontainers.image.title="registry" \
      org.opencontainers.image.description="Container image registry (OCI Distribution v1.1, Docker Registry API v2), drop-in for registry:2" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/registry /opt/registry
COPY contrib/docker/config.yml /etc/docker/registry/config.yml
COPY contrib/docker/entrypoint.sh /entrypoint.sh
ENV PATH=/opt/registry/bin:$PATH PYTHONUNBUFFERED=1
# The user owns only the storage folder; the config and the program stay root's.
RUN groupadd --system --gid "$GID" registry \
 && useradd --system --uid "$UID" --gid registry --home-dir /var/lib/registry \
        --no-create-home --shell /usr/sbin/nologin registry \
 && mkdir -p /var/lib/registry \
 && chown registry:registry /var/lib/registry \
 && chmod 0755 /entrypoint.sh \
 && chmod 0644 /etc/docker/registry/config.yml \
 && registry check-config /etc/docker/registry/config.yml >/dev/null
USER ${UID}:${GID}
VOLUME ["/var/lib/registry"]
EXPOSE 5000
# 200 (open) or 401 (access control on) from /v2/ on the port REGISTRY_HTTP_ADDR names
# (5000 by default). Over TLS, another port in a mounted config file, or client
# certificates required: replace it with `docker run --health-cmd ...`.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import http.client as h, os, sys; c = h.HTTPConnection('localhost', int(os.environ.get('REGISTRY_HTTP_ADDR', ':5000').rpartition(':')[2]), timeout=4); c.request('GET', '/v2/'); sys.exit(c.getresponse().status not in (200, 401))"]
# SIGTERM: stop accepting, finish requests in flight (an upload gets its 201) for up
# to http.draintimeout (5 s by default), then exit. Give `docker stop -t` more than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/entrypoint.sh"]
CMD ["/etc/docker/registry/config.yml"]
