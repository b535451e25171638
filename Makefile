# Thin wrapper around CMake. Every target first checks (and, as root,
# installs) the Debian packages the build needs: see scripts/deps.sh.
BUILD      ?= build
PREFIX     ?= /usr/local
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_ARGS ?=
CTEST_ARGS ?=
# CMake's generated makefiles are make run from make: without this, every
# one of them prints 'Entering/Leaving directory' (160 lines before the
# demo's summary).
MAKEFLAGS += --no-print-directory
FUZZ_SECONDS ?= 60

.PHONY: all deps configure build test demo bench install asan tsan fuzz soak valgrind clean

all: build

deps:
	@scripts/deps.sh

$(BUILD)/CMakeCache.txt: | deps
	cmake -S . -B $(BUILD) -DCMAKE_INSTALL_PREFIX=$(PREFIX) $(CMAKE_ARGS)

configure: deps $(BUILD)/CMakeCache.txt

build: configure
	cmake --build $(BUILD) -j $(JOBS)

# The README's test command: build, then run every test through CTest.
test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) $(CTEST_ARGS)

# The README's main job: a real encrypted session end to end on this machine.
demo: build
	SIO=$(BUILD)/sio scripts/demo.sh

# Benchmarks (docs/BENCHMARKS.md). BENCH_ARGS=--quick runs every row briefly;
# bench/tools.sh installs socat/spiped for the comparison rows when root.
# Then the listener at scale: BENCH_LISTENER_ARGS peers (docs/BENCHMARKS.md,
# "Listener at scale"; it says what capped the count when a limit did), and
# bench_lscale: listener traffic over 1 worker and over every core
# (LSCALE_ARGS=-q: a short run).
BENCH_LISTENER_ARGS ?= 100000
LSCALE_ARGS ?=
bench: build
	@bench/tools.sh
	$(BUILD)/sio-bench $(BENCH_ARGS)
	$(BUILD)/bench_listener $(BENCH_LISTENER_ARGS)
	$(BUILD)/bench_lscale $(LSCALE_ARGS)

# PREFIX wins over the prefix build/ was first configured with.
install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

asan:
	$(MAKE) test BUILD=build-asan CMAKE_ARGS="-DSIO_SANITIZE=address -DCMAKE_BUILD_TYPE=Debug $(CMAKE_ARGS)"

tsan:
	$(MAKE) test BUILD=build-tsan CMAKE_ARGS="-DSIO_SANITIZE=thread -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_ARGS)"

fuzz:
	@scripts/deps.sh fuzz
	CC=clang cmake -S . -B build-fuzz -DSIO_FUZZ=ON -DSIO_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build build-fuzz -j $(JOBS)
	scripts/fuzz.sh build-fuzz $(FUZZ_SECONDS)

# Long soak (not in CI): SOAK_SECONDS of traffic both ways through a fault
# relay with key renewal every second; fails on heap growth after warm-up.
SOAK_SECONDS ?= 60
soak: build
	SIO_SOAK_SECONDS=$(SOAK_SECONDS) $(BUILD)/test_soak

# The C tests and examples under valgrind memcheck (not in CI: slow).
valgrind: build
	scripts/valgrind.sh $(BUILD)

clean:
	rm -rf build build-asan build-tsan build-fuzz build-clang
