# The production image: the official Airflow image plus the release-engineering tools
# (dnf reposync/repoclosure, createrepo_c, xorriso, implantisomd5, squashfs, rsync, gpg)
# and this project's Python pins, DAGs, package, assets and configuration.
#
#   docker-compose build            # or: docker build -t releng-airflow:latest .
#
# Keep the tag's Airflow version equal to the apache-airflow pin below and in requirements.txt.
FROM apache/airflow:3.3.2-python3.11

# System tools: the same installer developers and CI use (it detects apt and runs as root here).
USER root
COPY scripts/install-system-tools.sh /tmp/install-system-tools.sh
RUN bash /tmp/install-system-tools.sh \
    && apt-get autoremove -yqq --purge \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /tmp/install-system-tools.sh

# Python pins, as the airflow user (the image refuses pip as root). Naming apache-airflow at the
# image's own version makes pip fail with a conflict instead of silently up- or downgrading Airflow.
USER airflow
COPY --chown=airflow:root requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir "apache-airflow==3.3.2" -r /tmp/requirements.txt

# The project. docker-compose.yaml bind-mounts the same folders over these for live edits;
# without those mounts (a Kubernetes deployment, `docker run`) the image is self-contained.
COPY --chown=airflow:root dags/ /opt/airflow/dags/
COPY --chown=airflow:root plugins/ /opt/airflow/plugins/
COPY --chown=airflow:root include/ /opt/airflow/include/
COPY --chown=airflow:root config/ /opt/airflow/config/
