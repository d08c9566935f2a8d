# torchstn: `make demo` sets up and runs the main job, `make test` runs the checks CI runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MINUTES ?=

.PHONY: setup test test-isa lint typecheck browser demo slow clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,nifti,atlas]'
	touch $@

lint: setup
	$(VENV)/bin/ruff check torchstn tests examples benchmarks
	$(VENV)/bin/ruff format --check torchstn tests examples benchmarks

typecheck: setup
	$(VENV)/bin/mypy torchstn

# headless Chromium renders the HTML report in its test; installed where apt-get runs as root,
# otherwise that one test is skipped (and says why)
APT := DEBIAN_FRONTEND=noninteractive timeout 900 apt-get
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  { $(APT) install -y -q chromium </dev/null >/dev/null 2>&1 || \
	    { $(APT) update -q </dev/null >/dev/null 2>&1 && \
	      $(APT) install -y -q chromium </dev/null >/dev/null 2>&1; }; } \
	  && echo "installed chromium (the report's browser test)" \
	  || echo "could not install chromium: the report's browser test will be skipped"; \
	else echo "no chromium (apt-get install chromium as root): the report's browser test will be skipped"; fi

# the sampler and precision tests again under PyTorch's other CPU kernel paths: reduced-precision
# kernels differ by instruction set, so a machine with AVX-512 also checks what one without sees
ISA_TESTS := tests/test_precision.py tests/functional tests/transforms tests/test_module.py tests/test_module3d.py \
	tests/test_composite.py tests/test_fastconv.py tests/test_native.py
test-isa: setup
	for cap in default avx2; do \
	  echo "ATEN_CPU_CAPABILITY=$$cap"; \
	  ATEN_CPU_CAPABILITY=$$cap $(PY) -m pytest -m "not slow" -q -p no:cacheprovider $(ISA_TESTS) || exit 1; \
	done

test: lint typecheck browser test-isa
	$(PY) -m pytest -m "not slow" -q

slow: setup
	$(PY) -m pytest -m slow -q

# a fixed amount of training (the packaged demo config's epochs), however busy the machine;
# `make demo MINUTES=4` caps the time
demo: setup
	$(VENV)/bin/torchstn demo --out runs/demo $(if $(MINUTES),--minutes $(MINUTES))

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
