//! `ferrolb validate` run as a process: exit status, what it prints, stdin, several files.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn ferrolb(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrolb"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

const BAD: &str = r#"apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: good, namespace: metallb-system}
spec:
  addresses: [10.0.0.0/24]
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: p, namespace: metallb-system}
spec:
  addresses: [10.1.0.0/24, 10.0.0.0/33]
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: ad, namespace: metallb-system}
spec:
  preferredNodeSelectors:
  - weight: 0
    preference: {}
"#;

#[test]
fn valid_files_exit_zero_with_a_summary() {
    let o = ferrolb(
        &[
            "validate",
            "-f",
            "examples/ipaddresspool.yaml",
            "-f",
            "examples/l2advertisement.yaml",
        ],
        None,
    );
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("ok: 1 IPAddressPool(s), 1 L2Advertisement(s) valid"),
        "{out}"
    );
    assert!(
        out.contains("IPAddressPool \"default\": 4 prefix(es), 21 IPv4 + 0 IPv6 address(es)"),
        "{out}"
    );
    assert!(!out.contains("error"), "{out}");
}

#[test]
fn errors_name_file_object_field_and_value_and_exit_one() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(&dir, "bad.yaml", BAD);
    let o = ferrolb(&["validate", "-f", &f], None);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains(&format!(
        "error: {f} document 2: IPAddressPool \"p\": spec.addresses[1]: invalid CIDR \"10.0.0.0/33\": prefix length 33 is longer than 32, the maximum for IPv4"
    )), "{out}");
    assert!(out.contains(&format!(
        "error: {f} document 3: L2Advertisement \"ad\": spec.preferredNodeSelectors[0].weight: weight 0 is out of range: must be between 1 and 100"
    )), "{out}");
    assert!(
        out.contains(
            "FAILED: 2 error(s); 1 of 2 IPAddressPool(s) and 0 of 1 L2Advertisement(s) valid"
        ),
        "{out}"
    );
}

#[test]
fn objects_from_several_files_are_validated_together() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        &dir,
        "a.yaml",
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: a}\nspec: {addresses: [10.0.0.0/16]}\n",
    );
    let b = write(
        &dir,
        "b.yaml",
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: b}\nspec: {addresses: [10.0.5.0-10.0.5.9]}\n",
    );
    let o = ferrolb(&["validate", "-f", &a, &b], None);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains(&format!(
        "error: {b} document 1: IPAddressPool \"b\": spec.addresses[0]: CIDR \"10.0.5.0/29\" overlaps with CIDR \"10.0.0.0/16\" of IPAddressPool \"a\" (spec.addresses[0]), which is kept"
    )), "{out}");
}

#[test]
fn stdin_other_kinds_and_warnings() {
    let text = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {type: LoadBalancer}\n---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: lonely}\nspec: {addresses: ['fc00::/124']}\n";
    let o = ferrolb(&["validate", "-f", "-"], Some(text));
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("note: <stdin> document 1: skipped Service \"web\""),
        "{out}"
    );
    assert!(
        out.contains("warning: <stdin> document 2: IPAddressPool \"lonely\": no L2Advertisement selects this pool"),
        "{out}"
    );
    assert!(out.contains("0 IPv4 + 16 IPv6 address(es)"), "{out}");
}

#[test]
fn unreadable_input_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml").display().to_string();
    let syntax = write(&dir, "syntax.yaml", "kind: [unclosed\n");
    let typed = write(
        &dir,
        "typed.yaml",
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: t}\nspec: {addresses: 10.0.0.0/24}\n",
    );
    let o = ferrolb(&["validate", "-f", &missing, &syntax, &typed], None);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains(&format!("error: {missing}: cannot read:")),
        "{out}"
    );
    assert!(
        out.contains(&format!("error: {syntax} document 1: YAML: ")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "error: {typed} document 1: IPAddressPool \"t\": spec.addresses: invalid type: string \"10.0.0.0/24\", expected a sequence"
        )),
        "{out}"
    );
}

#[test]
fn help_explains_the_command() {
    let o = ferrolb(&["validate", "--help"], None);
    let out = stdout(&o);
    assert!(o.status.success());
    assert!(out.contains("-f, --filename"), "{out}");
    assert!(
        out.contains("Exit status: 0 when everything is valid"),
        "{out}"
    );
    let o = ferrolb(&["validate"], None);
    assert!(!o.status.success(), "-f is required");
}
