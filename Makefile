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

# The skeleton video of examples/audio, then (with the embedded miniature student in models/miniature/) the
# avatar video of the same speech beside it.
MINIATURE := models/miniature
DEMO_AUDIO := examples/audio/hello.wav

demo: $(VENV)/.installed
	$(VENV)/bin/python infer_motion.py --model procedural --audio_folder examples/audio \
		--save_folder outputs/demo --visualization
	@if [ -d $(MINIATURE) ]; then \
		$(VENV)/bin/python scripts/generate.py --config config/miniature.yaml audio=$(DEMO_AUDIO) \
			out=outputs/demo/hello_avatar.mp4; \
	else \
		echo "$(MINIATURE)/ is absent, so only the skeleton video was written (scripts/export_miniature.py creates the student: README, Miniature reproduction)"; \
	fi

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q

test-gpu: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q -m gpu

clean-venv:
	rm -rf $(VENV)
