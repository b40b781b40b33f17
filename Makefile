# Set-up and entry points. Every target creates the virtual environment first
# when it is missing, so a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo_out

.PHONY: venv demo test test-slow test-ddsp-reference clean-demo

venv: $(VENV)/.installed

# requirements.txt pins every package to the versions this project was tested
# with. tinysoundfont goes in without its dependencies because it declares
# pyaudio, which is only for live playback and has no wheel for Linux.
$(VENV)/.installed: setup.cfg pyproject.toml requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c requirements.txt -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps -c requirements.txt tinysoundfont
	touch $@

demo: venv
	$(BIN)/condgen data soundfont $(DEMO_DIR)/soundfont --preset demo --force
	$(BIN)/condgen train recipes/demo_ddsp.toml data.root=$(DEMO_DIR)/soundfont run_dir=$(DEMO_DIR)/runs/ddsp --force
	$(BIN)/condgen generate $(DEMO_DIR)/runs/ddsp/checkpoints/latest.safetensors --instrument keyboard_synthetic_000 --pitch 48:72:12 --velocity 127 -o $(DEMO_DIR)/wav --force
	$(BIN)/condgen data chairs-synthetic $(DEMO_DIR)/chairs --force
	$(BIN)/condgen train recipes/demo_chairs.toml data.root=$(DEMO_DIR)/chairs run_dir=$(DEMO_DIR)/runs/chairs --force
	$(BIN)/condgen render $(DEMO_DIR)/runs/chairs/checkpoints/latest.safetensors --chair 0 --azimuth 0:360:30 --elevation 20,30 --scale 2 -o $(DEMO_DIR)/chair_views.png --turntable $(DEMO_DIR)/chair_turntable.gif --force
	@echo "WAV files written to $(DEMO_DIR)/wav; chair views written to $(DEMO_DIR)/chair_views.png and $(DEMO_DIR)/chair_turntable.gif"

test: venv
	$(BIN)/python -m pytest -q

test-slow: venv
	$(BIN)/python -m pytest -q -m slow

clean-demo:
	rm -rf $(DEMO_DIR)

# Parity with Magenta's TensorFlow-only ddsp, in its own environment .venv-ddsp.
.venv-ddsp/.installed: bench/ddsp_reference/install.sh setup.cfg pyproject.toml requirements.txt
	PYTHON=$(PYTHON) bash bench/ddsp_reference/install.sh
	touch $@

test-ddsp-reference: .venv-ddsp/.installed
	.venv-ddsp/bin/python -m pytest -q -m ddsp_reference tests/test_ddsp_parity.py
