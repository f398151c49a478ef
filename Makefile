# The two things people do with the lab. Both prepare the machine first (scripts/setup-host).
#   make lab    build the images and run every scenario of lab.yaml: verdict table + report.json
#   make test   lint, types, unit tests, end-to-end tests, host checks (what CI runs); it starts a
#               second Docker engine (scripts/second-engine) for the engine tests, and image
#               registries on loopback (scripts/registry) for the registry tests, stopped after
TOX := .venv/bin/tox

.PHONY: setup lab test unit e2e clean
setup:
	@scripts/setup-host

lab: setup
	$(TOX) run -e lab

# The run page's browser test needs chromium: setup installs it for the tests.
test: export LAB_SETUP_BROWSER := 1
test: setup
	scripts/second-engine up
	scripts/registry up
	trap 'scripts/registry down' EXIT; trap 'exit 130' INT TERM; $(TOX) run -e lint,type,unit,e2e,infra

unit: setup
	$(TOX) run -e unit

e2e: setup
	$(TOX) run -e e2e

clean: setup
	$(TOX) exec -e lab -- lab clean
