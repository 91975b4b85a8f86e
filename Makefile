# `make demo` and `make test` create the environment on first use; nothing is downloaded at run time.
PYTHON ?= python3
VENV := .venv
# The torch build this project is tested with; override for another CUDA or CPU build.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test test-gpu clean-venv

$(VENV)/.installed: setup.py requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q $(TORCH_SPEC)
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/python infer_motion.py --model procedural --audio_folder examples/audio \
		--save_folder outputs/demo --visualization

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q

test-gpu: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q -m gpu

clean-venv:
	rm -rf $(VENV)
