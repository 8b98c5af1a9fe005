//! The container image builds here without a Docker engine (umoci) and starts (runc):
//! `scripts/build-image.sh` packs the binary, `runc` runs `ferrolb --version` inside it as the
//! image's non-root user.

use std::path::PathBuf;
use std::process::Command;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn available(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn image_builds_and_runs_version() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let missing: Vec<&str> = ["umoci", "runc"]
        .into_iter()
        .filter(|t| !available(t))
        .collect();
    if !root || !missing.is_empty() {
        let why = if root {
            format!("missing {missing:?} (apt-get install umoci runc)")
        } else {
            "runc needs root".to_string()
        };
        assert!(
            !in_ci(),
            "image test cannot run: {why}; CI=true, so this is a failure"
        );
        eprintln!("SKIPPED image_builds_and_runs_version: {why}");
        return;
    }
    let repo = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("oci");
    let out = Command::new(repo.join("scripts/build-image.sh"))
        .arg(env!("CARGO_BIN_EXE_ferrolb"))
        .arg(&layout)
        .arg("test")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "build-image.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bundle = tmp.path().join("bundle");
    let st = Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:test", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "umoci unpack: {}",
        String::from_utf8_lossy(&st.stderr)
    );

    // The image config says: non-root user, ferrolb as entrypoint.
    let cfg_path = bundle.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    assert_eq!(cfg["process"]["user"]["uid"], 65534);
    assert_eq!(cfg["process"]["args"][0], "/usr/local/bin/ferrolb");
    cfg["process"]["args"] = serde_json::json!(["/usr/local/bin/ferrolb", "--version"]);
    cfg["process"]["terminal"] = serde_json::json!(false);
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();

    let id = format!("ferrolb-image-test-{}", std::process::id());
    let run = Command::new("runc")
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .output()
        .unwrap();
    let _ = Command::new("runc")
        .args(["delete", "--force", &id])
        .output();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "runc run failed: {}{}",
        stdout,
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        stdout.trim(),
        format!("ferrolb {}", env!("CARGO_PKG_VERSION"))
    );
}
