//! Entering a Linux network namespace: the one system call the dataplane (which may open its
//! sockets in a namespace given by path) and the lab (which talks from inside the namespaces
//! it builds) share. A crate of its own so that neither depends on the other.

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Runs `f` on a thread that entered the network namespace at `netns` (a path such as
/// `/run/netns/NAME` or `/proc/PID/ns/net`), or directly when `netns` is `None`.
pub fn in_netns<T, F>(netns: Option<&Path>, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let Some(path) = netns else { return f() };
    let path: PathBuf = path.to_owned();
    std::thread::Builder::new()
        .name("ferrolb-setns".into())
        .spawn(move || {
            let ns = std::fs::File::open(&path).map_err(|e| {
                io::Error::new(e.kind(), format!("open netns {}: {e}", path.display()))
            })?;
            // SAFETY: setns(2) on a descriptor this thread owns for the duration of the call;
            // it changes only the calling thread's namespace, and the thread ends with `f`.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                let e = io::Error::last_os_error();
                return Err(io::Error::new(
                    e.kind(),
                    format!("setns {}: {e}", path.display()),
                ));
            }
            f()
        })?
        .join()
        .map_err(|_| io::Error::other("netns thread panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_namespace_runs_in_place() {
        let id = std::thread::current().id();
        let ran_on = in_netns(None, move || Ok(std::thread::current().id())).unwrap();
        assert_eq!(ran_on, id);
    }

    #[test]
    fn a_missing_namespace_is_an_error_naming_the_path() {
        let e = in_netns(Some(Path::new("/nonexistent/netns")), || Ok(())).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/netns"), "{e}");
    }
}
