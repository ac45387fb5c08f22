//! Link options for the collector's binaries.

fn main() {
    // Pack the relative relocations of the position-independent executable (DT_RELR): the
    // loader reads all of them at startup, and as 24-byte RELA entries they were 5.6 MB of
    // the binary resident for the process's life.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
