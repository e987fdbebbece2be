# Entry points. The logic lives in scripts/; every target does its own set-up.
# Without KERNEL=, make run boots Debian's arm64 Linux (fetched once into target/linux).
#
#   make run   [KERNEL=Image] [INITRD=file] [APPEND="..."] [SMP=n] [MEM=128M] [CPUS=n] [VMS=n] [HVARGS="log=debug"] [PAUTH=impdef|qarma5] [PSTORE=target/pstore.img|none]
#   make debug (same options; QEMU halted with a gdb stub on :1234)
#   make test  host unit tests, then every boot test
#   make bench benchmarks (numbers, not verdicts)
#   make fuzz  long runs of the property tests of guest- and disk-controlled input

KERNEL ?=
INITRD ?=
APPEND ?=
SMP ?=
MEM ?=
CPUS ?=
VMS ?=
HVARGS ?=
PAUTH ?= impdef
PSTORE ?=

QEMU_OPTS = --kernel "$(KERNEL)" --initrd "$(INITRD)" --append "$(APPEND)" --smp "$(SMP)" \
            --mem "$(MEM)" --cpus "$(CPUS)" --vms "$(VMS)" --hv-args "$(HVARGS)" --pauth "$(PAUTH)" \
            --pstore "$(PSTORE)"

.PHONY: all setup build run debug test unit-test boot-test bench fuzz clean

all: build

setup:
	@scripts/setup.sh

build: setup
	@CARGO_QUIET=1 scripts/build.sh

run: build
	@python3 scripts/qemu.py run $(QEMU_OPTS)

debug: build
	@scripts/setup.sh --debug
	@python3 scripts/qemu.py debug $(QEMU_OPTS)

test: build
	@scripts/test.sh

unit-test: setup
	@cargo test -p hv-core

boot-test: build
	@python3 scripts/boottest.py

bench: build
	@python3 scripts/bench.py

# The property tests of everything guests and disks control, 100x longer than in make test
# (FUZZ_SEED=n picks another seed).
fuzz: setup
	@FUZZ_ITERS=$${FUZZ_ITERS:-100} cargo test -p hv-core --release --lib -- fuzz_tests garbage --nocapture

clean:
	rm -rf target
