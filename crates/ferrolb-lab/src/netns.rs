//! Network-namespace test networks: a bridge as switch, hosts on veth pairs, cleaned up on drop.
//!
//! ```no_run
//! use ferrolb_lab::netns::{privileged_or_skip, HostSpec, Network};
//! if !privileged_or_skip("my_test") { return; }
//! let mut net = Network::new().unwrap();
//! let client = net.add_host("client", HostSpec::v4v6("10.0.0.1/24", "fd00::1/64")).unwrap();
//! let node = net.add_host("node", HostSpec::v4("10.0.0.2/24")).unwrap();
//! let out = net.host(client).ns.run(&["ping", "-c1", "10.0.0.2"]).unwrap();
//! ```
//!
//! Every [`Network`] gets a unique name prefix (process id + counter), so tests running
//! in parallel — even in different processes — never collide. Namespaces, and with them
//! the bridge and veth pairs, are deleted when the [`Network`] is dropped; background
//! processes started with [`Netns::spawn`] are killed when their [`Background`] handle is
//! dropped.

use std::io;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Decides whether a privileged test can run. Returns `true` when running as root with
/// working `ip netns`; otherwise prints why and returns `false` (the test should return
/// early) — except when `CI=true`, where it panics so CI never silently skips.
pub fn privileged_or_skip(test_name: &str) -> bool {
    match check_privileged() {
        Ok(()) => true,
        Err(why) => skip_or_panic(test_name, &why),
    }
}

/// Like [`privileged_or_skip`], additionally requiring the given programs on `PATH`.
pub fn privileged_with_tools_or_skip(test_name: &str, tools: &[&str]) -> bool {
    if !privileged_or_skip(test_name) {
        return false;
    }
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !on_path(t)).collect();
    if missing.is_empty() {
        true
    } else {
        skip_or_panic(test_name, &format!("missing tools: {}", missing.join(", ")))
    }
}

fn skip_or_panic(test_name: &str, why: &str) -> bool {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test_name}: privileged test cannot run in CI: {why}");
    }
    eprintln!("SKIPPED {test_name}: {why}");
    false
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

fn check_privileged() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not running as root".into());
    }
    if !on_path("ip") {
        return Err("`ip` (iproute2) not found".into());
    }
    let probe = Netns::create(&format!("{}-probe", unique_prefix()))
        .map_err(|e| format!("`ip netns add` does not work: {e:#}"))?;
    probe
        .run(&["ip", "link", "set", "lo", "up"])
        .map_err(|e| format!("cannot run commands in a namespace: {e:#}"))?;
    Ok(())
}

fn unique_prefix() -> String {
    format!(
        "flb{}x{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn run_cmd(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawning {cmd:?}"))?;
    Ok(out)
}

fn check(out: Output, what: &str) -> Result<String> {
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A named network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace with loopback up.
    pub fn create(name: &str) -> Result<Self> {
        check(
            run_cmd(Command::new("ip").args(["netns", "add", name]))?,
            "ip netns add",
        )?;
        let ns = Self { name: name.into() };
        ns.run(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of the namespace file (for `setns`, e.g. the dataplane's `netns` option).
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// A `Command` that runs `argv` inside the namespace.
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(argv);
        c
    }

    /// Runs `argv` in the namespace and returns its output whatever the exit status.
    pub fn output(&self, argv: &[&str]) -> Result<Output> {
        run_cmd(&mut self.command(argv))
    }

    /// Runs `argv` in the namespace; fails (with stderr) on non-zero exit; returns stdout.
    pub fn run(&self, argv: &[&str]) -> Result<String> {
        check(self.output(argv)?, &argv.join(" "))
    }

    /// Runs a shell snippet (`sh -c`) in the namespace; fails on non-zero exit.
    pub fn sh(&self, script: &str) -> Result<String> {
        self.run(&["sh", "-c", script])
    }

    /// Starts `argv` in the background inside the namespace (stdout/stderr captured).
    /// The process is killed when the returned handle is dropped.
    pub fn spawn(&self, argv: &[&str]) -> Result<Background> {
        let child = self
            .command(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {argv:?} in {}", self.name))?;
        Ok(Background { child: Some(child) })
    }

    /// Runs `f` on a thread that entered this namespace (sockets it creates stay in it).
    pub fn enter<T, F>(&self, f: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> io::Result<T> + Send + 'static,
    {
        ferrolb_netns::in_netns(Some(&self.path()), f)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A background process in a namespace; killed (and reaped) on drop.
#[derive(Debug)]
pub struct Background {
    child: Option<Child>,
}

impl Background {
    /// Process id.
    pub fn id(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Sends SIGINT (lets tools such as tcpdump flush) and waits up to `timeout` for exit,
    /// then kills. Returns the collected output.
    pub fn stop(mut self, timeout: std::time::Duration) -> Result<Output> {
        let mut child = self.child.take().context("already stopped")?;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = child.kill();
        Ok(child.wait_with_output()?)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Addresses of a host on the test network.
#[derive(Debug, Clone, Default)]
pub struct HostSpec {
    /// IPv4 address with prefix, e.g. `10.0.0.1/24`.
    pub ipv4: Option<String>,
    /// IPv6 address with prefix, e.g. `fd00::1/64` (added with `nodad`).
    pub ipv6: Option<String>,
}

impl HostSpec {
    /// IPv4 only.
    pub fn v4(a: &str) -> Self {
        Self {
            ipv4: Some(a.into()),
            ipv6: None,
        }
    }
    /// IPv6 only.
    pub fn v6(a: &str) -> Self {
        Self {
            ipv4: None,
            ipv6: Some(a.into()),
        }
    }
    /// Dual stack.
    pub fn v4v6(a4: &str, a6: &str) -> Self {
        Self {
            ipv4: Some(a4.into()),
            ipv6: Some(a6.into()),
        }
    }
}

/// Handle of a host in a [`Network`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostId(usize);

/// A host: its namespace and its interface on the switch.
#[derive(Debug)]
pub struct Host {
    /// Role name given to [`Network::add_host`].
    pub role: String,
    /// The host's namespace.
    pub ns: Netns,
    /// Interface name inside the host namespace (always `eth0`).
    pub ifname: String,
    /// MAC of `eth0`.
    pub mac: [u8; 6],
    /// Name of the switch-side veth peer (inside the switch namespace).
    pub switch_port: String,
}

impl Host {
    /// MAC formatted `aa:bb:cc:dd:ee:ff`.
    pub fn mac_string(&self) -> String {
        format_mac(self.mac)
    }
}

/// Formats a MAC as lower-case colon-separated hex.
pub fn format_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A switched L2 segment: a switch namespace with bridge `br0` and hosts attached to it
/// through veth pairs. Everything is removed on drop.
#[derive(Debug)]
pub struct Network {
    prefix: String,
    // Field order matters: hosts are dropped before the switch.
    hosts: Vec<Host>,
    switch: Netns,
}

impl Network {
    /// Creates the switch namespace and its bridge (STP off, no forwarding delay).
    pub fn new() -> Result<Self> {
        let prefix = unique_prefix();
        let switch = Netns::create(&format!("{prefix}-sw"))?;
        switch.run(&[
            "ip",
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ])?;
        switch.run(&["ip", "link", "set", "br0", "up"])?;
        Ok(Self {
            prefix,
            hosts: Vec::new(),
            switch,
        })
    }

    /// The unique prefix of every namespace of this network.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The switch namespace (bridge `br0`; handy for tcpdump on the whole segment).
    pub fn switch(&self) -> &Netns {
        &self.switch
    }

    /// Adds a host namespace `<prefix>-<role>` attached to the bridge, with `eth0` up
    /// and the given addresses (IPv6 DAD disabled so addresses are usable at once).
    pub fn add_host(&mut self, role: &str, spec: HostSpec) -> Result<HostId> {
        let idx = self.hosts.len();
        let ns = Netns::create(&format!("{}-{role}", self.prefix))?;
        for (k, v) in [
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
        ] {
            ns.run(&["sysctl", "-qw", &format!("{k}={v}")])?;
        }
        let port = format!("p{idx}");
        self.switch.run(&[
            "ip",
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name(),
        ])?;
        self.switch
            .run(&["ip", "link", "set", &port, "master", "br0", "up"])?;
        ns.run(&["ip", "link", "set", "eth0", "up"])?;
        if let Some(a) = &spec.ipv4 {
            ns.run(&["ip", "addr", "add", a, "dev", "eth0"])?;
        }
        if let Some(a) = &spec.ipv6 {
            ns.run(&["ip", "-6", "addr", "add", a, "dev", "eth0", "nodad"])?;
        }
        let mac_s = ns.run(&["cat", "/sys/class/net/eth0/address"])?;
        let mac = parse_mac(mac_s.trim()).with_context(|| format!("bad MAC {mac_s:?}"))?;
        self.hosts.push(Host {
            role: role.into(),
            ns,
            ifname: "eth0".into(),
            mac,
            switch_port: port,
        });
        Ok(HostId(idx))
    }

    /// The host behind `id`.
    pub fn host(&self, id: HostId) -> &Host {
        &self.hosts[id.0]
    }

    /// All hosts, in creation order.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in m.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parse_format_roundtrip() {
        let m = [0x02, 0xab, 0, 0x10, 0xff, 1];
        assert_eq!(format_mac(m), "02:ab:00:10:ff:01");
        assert_eq!(parse_mac("02:ab:00:10:ff:01"), Some(m));
        assert_eq!(parse_mac("02:ab:00:10:ff"), None);
        assert_eq!(parse_mac("02:ab:00:10:ff:01:02"), None);
        assert_eq!(parse_mac("zz:ab:00:10:ff:01"), None);
    }

    #[test]
    fn prefixes_are_unique() {
        let a = unique_prefix();
        let b = unique_prefix();
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("flb{}x", std::process::id())));
    }
}
