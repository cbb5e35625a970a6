#!/bin/sh
# The image's entry point, as registry:2's: a config file is served, a registry
# command runs through `registry`, anything else (a shell) runs as it is.
#   docker run IMAGE                                   registry serve /etc/docker/registry/config.yml
#   docker run IMAGE /etc/docker/registry/config.yml   the same
#   docker run IMAGE garbage-collect CONFIG            registry garbage-collect CONFIG
#   docker run IMAGE sh                                a shell
set -e
case "$1" in
    *.yaml|*.yml) set -- registry serve "$@" ;;
    serve|garbage-collect|check-config|purge-uploads|certs|engine|users|-*) set -- registry "$@" ;;
esac
exec "$@"
