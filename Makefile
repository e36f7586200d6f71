# The commands: `make demo`, `make test` and `make test-fast`. Each sets up .venv itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO_LOGDIR ?= demo_logs
PORT ?= 6006
# Where `make demo` serves: localhost only. `make demo BIND=--bind_all` serves
# every interface (anyone who can reach the machine sees the demo).
BIND ?= --host localhost

.PHONY: test test-fast demo bench venv clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	# Exactly this CPU build: a range admitting a newer release pulls a CUDA build of several GB.
	# The trainer integrations' libraries go in the same call, pinned, so pip cannot upgrade torch.
	$(PY) -m pip install -q torch==2.13.0 lightning==2.6.6 transformers==5.25.0 peft==0.21.2 accelerate==1.16.0
	touch $@

venv: $(VENV)/.installed

# Everything: the node tests, then every Python test, the end-to-end tier too.
test: venv
	node --test frontend/tests/
	$(PY) -m pytest -q tests

# The inner loop: the node tests and the Python tests not marked e2e
# (tests/conftest.py), about two minutes on 2 cores.
test-fast: venv
	node --test frontend/tests/
	$(PY) -m pytest -q -m "not e2e" tests

demo: venv
	$(PY) -m demo --logdir $(DEMO_LOGDIR)
	@echo "Open http://localhost:$(PORT)/#varupdate"
	$(VENV)/bin/tensorboard --logdir $(DEMO_LOGDIR) --port $(PORT) $(BIND)

bench: venv
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) build dist *.egg-info test-artifacts
