"""Developer tooling: evaluation, benchmarks, soak, chaos, the scale test, fuzzing, the dependency
audit, local PostgreSQL and Redis servers, and a fake Telegram Bot API. `python -m tools`.

The product (bot/, actions/) never imports this package (ruff's banned imports in pyproject.toml,
tests/test_layout.py), and the image leaves it out (.dockerignore)."""
