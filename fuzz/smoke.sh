#!/usr/bin/env bash
# Fuzzing smoke for CI: runs every cargo-fuzz target for FUZZ_SECONDS (default
# 30) seconds from the committed seeds, and exits non-zero if any target finds a
# crash, a hang (over 10 s on one input) or fails to build. Installs cargo-fuzz
# when it is missing. Long runs: see README.md.
set -euo pipefail
cd "$(dirname "$0")"

secs="${FUZZ_SECONDS:-30}"
CARGO_FUZZ_VERSION=0.13.2

# rust-toolchain.toml here pins the eBPF crate's nightly (cargo-fuzz needs one).
if ! rustup run "$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)" cargo --version >/dev/null 2>&1; then
    echo "smoke: installing the pinned nightly toolchain (cargo-fuzz needs a nightly)"
    rustup toolchain install
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "smoke: installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

# tracer/build.rs watches the eBPF object; while it is missing cargo reruns
# that build script, and so recompiles tracer, on every command (each `fuzz
# run` too). An empty stand-in keeps builds incremental: the fuzz targets
# never load the object.
if [ -z "${PATHTRACE_EBPF_OBJ:-}" ] &&
    [ ! -e ../tracer-ebpf/target/bpfel-unknown-none/release/tracer-ebpf ]; then
    mkdir -p target
    [ -e target/no-ebpf.o ] || : >target/no-ebpf.o
    export PATHTRACE_EBPF_OBJ="$PWD/target/no-ebpf.o"
fi

start=$SECONDS
cargo fuzz build
echo "smoke: built the fuzz targets in $((SECONDS - start)) s"

failed=()
for t in $(cargo fuzz list); do
    mkdir -p "corpus/$t"
    echo "smoke: fuzzing $t for ${secs} s"
    if ! cargo fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -timeout=10 -print_final_stats=1; then
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "smoke: FAILED: ${failed[*]} (inputs under fuzz/artifacts/<target>/)" >&2
    exit 1
fi
echo "smoke: every target ran ${secs} s without a crash ($((SECONDS - start)) s in all)"
