# Newcomer's entry points (wrapping CMake):
#   make run     build the library and the bnb4 command, quantize the bundled example model
#                (models/example-llama) to a bitsandbytes NF4 checkpoint and inspect it
#   make test    install what the build needs, build everything (CUDA too when nvcc is found),
#                and run every test, then again under ASan + UBSan
# More: make build | make example | make test-fast | make test-sanitize | make install PREFIX=... | make clean
BUILD ?= build
BUILD_ASAN ?= build-asan
# The main job needs only the CPU library and the tool: a build of its own keeps it under a minute on
# a fresh machine (compiling the CUDA kernels alone takes minutes on two cores).
BUILD_RUN ?= build-run
RUN_OUT ?= $(BUILD_RUN)/example-llama-nf4
PREFIX ?= /usr/local
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=

.PHONY: all deps build run example test test-fast test-sanitize install clean

all: build

deps:
	@./scripts/install-deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

run: deps
	cmake -S . -B $(BUILD_RUN) -DCMAKE_BUILD_TYPE=Release -DBNB4_CUDA=OFF -DBNB4_BUILD_TESTS=OFF $(CMAKE_FLAGS) >/dev/null
	cmake --build $(BUILD_RUN) -j $(JOBS) --target bnb4_cli
	./$(BUILD_RUN)/bnb4 quantize --force models/example-llama $(RUN_OUT)
	./$(BUILD_RUN)/bnb4 inspect $(RUN_OUT)

# The five-minute C example on a realistic 4096 x 4096 float16 layer.
example: build
	./$(BUILD)/bnb4_example

test-fast: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-sanitize: deps
	cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBNB4_SANITIZE=ON -DBNB4_CUDA=OFF $(CMAKE_FLAGS)
	cmake --build $(BUILD_ASAN) -j $(JOBS)
	cd $(BUILD_ASAN) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --output-on-failure -j $(JOBS) -E install_consumer

test: test-fast test-sanitize

install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_RUN)
