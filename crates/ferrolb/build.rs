//! Where the linker puts the speaker's code in the `ferrolb` binary.
//!
//! One speaker runs on every node, so its resident memory is paid once per node, and most of
//! it is code: the kernel maps a binary's code into a process up to 64 KiB at a time around
//! each page the process runs (fault-around). In the compiler's order the few megabytes of
//! functions a speaker runs lie scattered over the whole text, and nearly all of it ends up
//! resident. `speaker.order` lists the functions a speaker runs (`scripts/speaker-order.sh`
//! writes it from runs under callgrind and perf); release builds pass it to the linker, which
//! places them first and together, so the rest of the text is never mapped by a speaker. A
//! name the list holds that the binary lacks (after a change or a toolchain upgrade) is
//! skipped, so a stale list costs memory, never correctness.
//!
//! The same builds pack the binary's relative relocations (`-z pack-relative-relocs`, used
//! by LLD only when the C library supports it, glibc 2.36 and later): the dynamic loader
//! reads every relocation at start, so the table's pages stay resident; packed, it is a few
//! kilobytes instead of hundreds.
//!
//! Only where the linker is LLD: rustc links x86_64 Linux binaries with its own LLD since
//! 1.90, and GNU ld has neither option. `FERROLB_LINK_ORDER=0` turns both off.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=speaker.order");
    println!("cargo:rerun-if-env-changed=FERROLB_LINK_ORDER");
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let list = Path::new(&env("CARGO_MANIFEST_DIR")).join("speaker.order");
    if env("PROFILE") != "release" || env("FERROLB_LINK_ORDER") == "0" {
        return;
    }
    if !links_with_rust_lld(
        &env("TARGET"),
        &env("RUSTC"),
        &env("CARGO_ENCODED_RUSTFLAGS"),
    ) {
        return;
    }
    println!("cargo:rustc-link-arg-bin=ferrolb=-Wl,-z,pack-relative-relocs");
    if list.exists() {
        println!(
            "cargo:rustc-link-arg-bin=ferrolb=-Wl,--symbol-ordering-file={}",
            list.display()
        );
        println!("cargo:rustc-link-arg-bin=ferrolb=-Wl,--no-warn-symbol-ordering");
    }
}

/// True when rustc links this target with its own LLD: x86_64 Linux (GNU) from rustc 1.90,
/// unless the flags choose another linker.
fn links_with_rust_lld(target: &str, rustc: &str, rustflags: &str) -> bool {
    if target != "x86_64-unknown-linux-gnu" {
        return false;
    }
    let chooses_linker = ["linker", "link-self-contained", "fuse-ld"];
    if chooses_linker.iter().any(|f| rustflags.contains(f)) {
        return false;
    }
    let linker_env = "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER";
    if std::env::var_os(linker_env).is_some() {
        return false;
    }
    let Ok(out) = Command::new(if rustc.is_empty() { "rustc" } else { rustc })
        .arg("-vV")
        .output()
    else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(release) = text.lines().find_map(|l| l.strip_prefix("release: ")) else {
        return false;
    };
    let mut parts = release
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}
