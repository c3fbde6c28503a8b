# The entry points people type. Each installs what is missing first.
BUILD ?= build
JOBS  ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all setup build test demo bench fuzz sanitize soak package format clean

all: build

setup:
	@bash scripts/setup.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)

build: setup $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

# The README's test command. CI sets CI=true, which turns warnings into errors.
test: setup
	bash scripts/check-format.sh
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKAIO_WERROR=$(if $(CI),ON,OFF) $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j $(JOBS)
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) --timeout 600
	bash scripts/test-extra.sh $(BUILD)

# The demo builds only what it runs, in its own folder: no tests, no debug
# information, GPU kernels only where there is a GPU (scripts/demo.sh builds
# kaio-mkdata first and generates the data while the rest builds).
DEMO_BUILD ?= build-demo
DEMO_GPU := $(if $(wildcard /dev/nvidia0 /dev/kfd),AUTO,OFF)
demo: setup
	cmake -S . -B $(DEMO_BUILD) -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_FLAGS_RELEASE="-O2 -DNDEBUG" \
	  -DCMAKE_CXX_FLAGS_RELEASE="-O2 -DNDEBUG" -DBUILD_TESTING=OFF -DKAIO_CUDA=$(DEMO_GPU) -DKAIO_HIP=$(DEMO_GPU) $(CMAKE_FLAGS)
	bash scripts/demo.sh $(DEMO_BUILD) $(JOBS)

bench: setup
	cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF $(CMAKE_FLAGS)
	cmake --build build-release -j $(JOBS)
	bash bench/run.sh build-release

# libFuzzer targets, each for FUZZ_SECONDS (make test runs them for 20 s each).
FUZZ_SECONDS ?= 3600
fuzz: setup
	bash scripts/fuzz.sh $(FUZZ_SECONDS)

# The test suite under ASan+UBSan, and the concurrent parts under TSan.
sanitize: setup
	bash scripts/sanitize.sh

# The long forms of the reliability tests (kills, outages, full-scale budget run).
soak: build
	bash scripts/soak.sh $(BUILD)

# The .deb (cpack -G DEB) from a Release build without the tests: build-package/kaio_VERSION_ARCH.deb.
package: setup
	cmake -S . -B build-package -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF $(CMAKE_FLAGS)
	cmake --build build-package -j $(JOBS)
	cd build-package && cpack -G DEB

format:
	git ls-files '*.cpp' '*.h' '*.cu' '*.cuh' '*.hip' | xargs clang-format -i

clean:
	rm -rf $(BUILD) build-release build-package $(DEMO_BUILD) demo-run
