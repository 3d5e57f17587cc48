# Thin wrapper over CMake. The two quick-start commands are `make run` and `make test`.
BUILD      ?= build
ASAN_BUILD ?= build-asan
RELEASE_BUILD ?= build-release
DEB_BUILD  ?= build-deb
PREFIX     ?= /usr/local
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=

.PHONY: all deps build build-release test test-fast test-asan run bench fuzz chaos clean format install deb

all: build

deps:
	@sh scripts/deps.sh

$(BUILD)/Makefile: CMakeLists.txt
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)

build: deps $(BUILD)/Makefile
	cmake --build $(BUILD) -j $(JOBS)

# Everything, twice: a normal build, then AddressSanitizer + UBSan.
test: deps
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j $(JOBS)
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	cmake -S . -B $(ASAN_BUILD) -DMR_ASAN=ON -DMR_UBSAN=ON $(CMAKE_FLAGS)
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && MR_SCHEDULES=$${MR_ASAN_SCHEDULES:-2000} ctest --output-on-failure -j $(JOBS)

# Only the normal build (quick iteration).
test-fast: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The packagers' build: -DCMAKE_BUILD_TYPE=Release (-O3, NDEBUG) still under
# -Werror, whose optimiser finds warnings the default RelWithDebInfo does not;
# then the fast tests (unit + fuzz corpus replays) on those binaries. CI runs it.
build-release: deps
	cmake -S . -B $(RELEASE_BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)
	cmake --build $(RELEASE_BUILD) -j $(JOBS)
	cd $(RELEASE_BUILD) && ctest --output-on-failure -j $(JOBS) -L 'unit|fuzz'

test-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DMR_ASAN=ON -DMR_UBSAN=ON $(CMAKE_FLAGS)
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ctest --output-on-failure -j $(JOBS)

# Installs the binary, the example configs and scripts, the docs and the
# systemd unit under PREFIX (docs/operations.md "Installing").
install: deps
	cmake -S . -B $(BUILD) -DCMAKE_INSTALL_PREFIX=$(PREFIX) $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j $(JOBS) --target moonraft
	cmake --install $(BUILD) --prefix $(PREFIX)

# A Debian package (CPack): Release build without the tests, installed under
# /usr with its config in /etc/moonraft. The .deb lands in $(DEB_BUILD)/.
deb: deps
	cmake -S . -B $(DEB_BUILD) -DCMAKE_BUILD_TYPE=Release -DMR_BUILD_TESTS=OFF \
		-DCMAKE_INSTALL_PREFIX=/usr -DMR_INSTALL_SYSCONFDIR=/etc $(CMAKE_FLAGS)
	cmake --build $(DEB_BUILD) -j $(JOBS)
	cd $(DEB_BUILD) && cpack -G DEB
	@ls $(DEB_BUILD)/*.deb

run: build
	@sh scripts/run-cluster.sh $(BUILD)

bench: build
	@sh scripts/bench.sh $(BUILD)

fuzz: deps
	@sh scripts/fuzz.sh $${FUZZ_SECONDS:-600}

chaos: build
	@sh scripts/chaos.sh $(BUILD)

format:
	clang-format -i src/*/*.c src/*/*.h tests/*/*.c tests/*/*.h

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(RELEASE_BUILD) $(DEB_BUILD) build-fuzz
