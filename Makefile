# Quick start: `make demo` and `make test` work on a fresh machine (they create .venv themselves).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch is installed first and pinned, so pip takes the CPU wheel on this disk rather than a
# multi-GB CUDA build when it resolves the package's `torch>=2.3`.
TORCH := torch==2.13.0

.PHONY: venv demo test bench models model-docs clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv --clear $(VENV) || { rm -rf $(VENV); \
	  echo "could not create $(VENV) with $(PYTHON): it needs Python's venv module (Debian/Ubuntu: apt install python3-venv)"; exit 1; }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# A .venv whose Python no longer runs (removed, or upgraded by the system) is made again.
ifneq ($(wildcard $(VENV)),)
ifneq ($(shell $(PY) -c "print('ok')" 2>/dev/null),ok)
$(info $(VENV): its Python no longer runs; making it again)
$(shell rm -rf $(VENV))
endif
endif

demo: venv
	$(PY) scripts/demo.py

test: venv
	$(PY) -m pytest -q

bench: venv
	$(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) benchmarks/bench_upscale.py

# Rebuild the bundled models from configs/models/ (2-core CPU: about two hours; docs/models.md), then
# their quality benchmark and pictures.
models: venv
	$(PY) -m pip install --quiet -e '.[test,models]'
	$(PY) scripts/train_bundled.py photo_x4
	$(PY) scripts/train_bundled.py photo_x4_gan

model-docs: venv
	$(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) benchmarks/bench_models.py
	$(PY) scripts/model_pictures.py

clean:
	rm -rf $(VENV) build demo-output .pytest_cache src/esrforge.egg-info
