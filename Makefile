# Entry points. The logic lives in scripts/; every target does its own set-up.
# Without KERNEL=, make run boots Debian's arm64 Linux (fetched once into target/linux).
#
#   make run   [KERNEL=Image] [INITRD=file] [APPEND="..."] [SMP=n] [MEM=128M] [CPUS=n] [VMS=n]
#              [HVARGS="log=debug"] [PAUTH=impdef|qarma5] [PSTORE=target/pstore.img|none] [QEMU_EXTRA="..."]
#              [DISK="a.img b.img"] (VM 0's virtio-blk disks) [ROOT=/dev/vda] (root filesystem on one)
#              [NET=user [HOSTFWD=tcp:127.0.0.1:2222-:22]] (network cards, QEMU user networking as uplink)
#   make rootfs  target/rootfs.img: an ext4 disk with busybox (make run DISK=target/rootfs.img ROOT=/dev/vda)
#   make debian-rootfs  target/debian.img: Debian bookworm with systemd, its debootstrap second stage
#                run in a guest (make run DISK=target/debian.img ROOT=/dev/vda MEM=1G)
#   make debug (same options; QEMU halted with a gdb stub on :1234)
#   make print (same options; the QEMU command line, nothing run)
#   make test  host unit tests, then every boot test
#   make bench benchmarks (numbers, not verdicts)
#   make fuzz  long runs of the property tests of guest- and disk-controlled input
#   make help  this list

# The options reach scripts/qemu.py in the environment (HVRUN_<NAME>), exactly as given:
# $(value ...) keeps make from expanding a $ in them, and no shell command line carries them,
# so quotes, spaces, $ and backticks in APPEND reach the guest as written.
OPTIONS := KERNEL INITRD APPEND SMP MEM CPUS VMS HVARGS PAUTH PSTORE DISK ROOT NET HOSTFWD QEMU_EXTRA
$(foreach o,$(OPTIONS),$(eval export HVRUN_$(o) := $$(value $(o))))

.PHONY: all help setup build run debug print test unit-test boot-test bench fuzz clean rootfs debian-rootfs

all: build
	@echo "built target/images/hypervisor.bin and the test guests (target/images/*.bin); make help lists the targets"

help:
	@sed -n 's/^#   //p; s/^#              /             /p' Makefile

setup:
	@scripts/setup.sh

build: setup
	@CARGO_QUIET=1 scripts/build.sh

run: build
	@python3 scripts/qemu.py run --from-env

debug: build
	@scripts/setup.sh --debug
	@python3 scripts/qemu.py debug --from-env

rootfs: setup
	@scripts/mkrootfs.sh target/rootfs.img

debian-rootfs: setup
	@scripts/mkdebianrootfs.sh target/debian.img

print: setup
	@python3 scripts/qemu.py print --from-env

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
