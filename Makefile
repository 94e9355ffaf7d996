# Two entry points for a fresh machine: `make demo` (the main job) and `make test`.
# Both create/refresh .venv themselves from pinned requirements.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deps-installed
# ROS 2's launch system and CLI (not on any registry) from the shared folder, when there is one.
EXTRAS := ../shared/ros2_extras
EXTRAS_STAMP := $(if $(wildcard $(EXTRAS)/install.sh),$(VENV)/.ros2-extras-installed)

# ROS 2 on one machine: discovery stays on loopback, large images go through a 32 MB SHM segment.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export RMW_IMPLEMENTATION := rmw_fastrtps_cpp
export FASTDDS_DEFAULT_PROFILES_FILE := $(CURDIR)/config/fastdds_shm.xml
export AMENT_PREFIX_PATH := $(CURDIR)/$(VENV)$(if $(AMENT_PREFIX_PATH),:$(AMENT_PREFIX_PATH))
export PYTHONUNBUFFERED := 1

.PHONY: demo test install bench clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

# Re-runs only when the venv was rebuilt or install.sh changed (it builds from a copy: works read-only).
$(VENV)/.ros2-extras-installed: $(STAMP) $(EXTRAS)/install.sh
	bash $(EXTRAS)/install.sh $(VENV)
	touch $@

# Non-editable install: only a real install puts launch/config/models under share/ for ament_index.
install: $(STAMP) $(EXTRAS_STAMP)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation --force-reinstall .

# On TEST_WORKERS pytest-xdist workers: the ROS tests mostly wait (discovery, nodes starting, windows where nothing
# may arrive), so several overlap on 2 cores. A worker runs whole files (module-scoped launches start once), in the
# order test/conftest.py gives them, in a ROS domain of its own (the run's id + its index). TEST_WORKERS=0: serial.
# Tests marked `alone` measure delivery at full rate (1080p at 30 Hz, best effort): they run afterwards, one at a
# time, with the machine to themselves. Both parts always run; the first failure's exit code is the result.
TEST_WORKERS ?= 3
PYTEST := $(PY) -m pytest -q -rs --durations=20 -p no:cacheprovider
test: install
	export ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-$$(( RANDOM % 100 + 100 ))}; \
	$(PYTEST) -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m 'not alone' test; rc=$$?; \
	$(PYTEST) -m alone test; alone=$$?; exit $$(( rc ? rc : alone ))

demo: install
	ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-$$(( RANDOM % 100 + 100 ))} $(PY) -m vidseg_ros.ros.demo $(if $(VIDEO),--video $(VIDEO))

bench: install
	for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info demo_out
