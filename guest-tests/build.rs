fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let script = format!("{dir}/../linker/guest.ld");
    if std::env::var("TARGET").is_ok_and(|t| t.starts_with("aarch64-unknown-none")) {
        println!("cargo:rustc-link-arg-bins=-T{script}");
        // Relocations kept in the ELF: scripts/elf2image.py --rebase moves an image to
        // another load address with them (the bench guest as Xen's dom0).
        println!("cargo:rustc-link-arg-bins=--emit-relocs");
    }
    println!("cargo:rerun-if-changed={script}");
}
