# ml-connector in a container: one pass per run (the scheduler outside starts it), non-root, secrets from
# the environment, state on a volume. Build: docker build -t mlconnector .
# Run:   docker run --rm -v mlc-state:/var/lib/mlconnector -v $PWD/acme.toml:/etc/mlconnector/config.toml:ro \
#          -e MLCONNECTOR_PEOPLESOFT_PASSWORD -e MLCONNECTOR_JIRA_API_TOKEN mlconnector sync peoplesoft-jira
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    # Where `--config` points by default, and where state, audit trail and caches live (the volume).
    MLCONNECTOR_CONFIG=/etc/mlconnector/config.toml \
    XDG_STATE_HOME=/var/lib/mlconnector \
    XDG_CACHE_HOME=/var/lib/mlconnector/cache \
    # No keyring in a container: secrets come from MLCONNECTOR_<SYSTEM>_<NAME> variables (a Secret).
    PYTHON_KEYRING_BACKEND=keyring.backends.null.Keyring

WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY mlconnector ./mlconnector
RUN pip install -c constraints.txt . && rm -rf /src \
    && useradd --system --uid 10001 --home-dir /var/lib/mlconnector --shell /usr/sbin/nologin mlconnector \
    && mkdir -p /var/lib/mlconnector /etc/mlconnector \
    && chown mlconnector /var/lib/mlconnector && chmod 0700 /var/lib/mlconnector

USER 10001
WORKDIR /var/lib/mlconnector
VOLUME ["/var/lib/mlconnector"]
ENTRYPOINT ["mlconnector"]
CMD ["--help"]
