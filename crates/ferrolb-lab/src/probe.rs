//! The lab's client: plain HTTP requests from inside the client namespace, one every few
//! milliseconds, recording which node answered (or that nothing did) over time. The Linux
//! kernel of the client namespace does the ARP/NDP resolution, exactly as a laptop would.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// One HTTP GET with a total deadline; returns the response body.
pub fn http_get(addr: SocketAddr, timeout: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + timeout;
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    s.set_read_timeout(Some(left))?;
    s.set_write_timeout(Some(left))?;
    let host = match addr {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    s.write_all(
        format!("GET / HTTP/1.0\r\nHost: {host}\r\nUser-Agent: ferrolb-lab\r\n\r\n").as_bytes(),
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    if !head.starts_with("HTTP/1.") || head.split_whitespace().nth(1).is_none_or(|c| c != "200") {
        bail!("unexpected response: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

/// What one probe saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The named node served the request.
    Node(String),
    /// No answer (timeout, refused, reset…).
    Failed,
}

/// One probe result, timed from the prober's start.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at: Duration,
    pub outcome: Outcome,
}

/// A background prober in a network namespace.
pub struct Prober {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    started: Instant,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Prober {
    /// Starts probing `target` every `interval` (each try times out after `timeout`) from a
    /// thread inside the namespace at `netns`.
    pub fn start(
        netns: PathBuf,
        target: SocketAddr,
        interval: Duration,
        timeout: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let (st, sa) = (stop.clone(), samples.clone());
        let thread = std::thread::spawn(move || {
            let _ = ferrolb_netns::in_netns(Some(&netns), move || {
                while !st.load(Ordering::SeqCst) {
                    let t0 = Instant::now();
                    let outcome = match http_get(target, timeout) {
                        Ok(body) => crate::backend::node_from_body(&body)
                            .map(|n| Outcome::Node(n.to_string()))
                            .unwrap_or(Outcome::Failed),
                        Err(_) => Outcome::Failed,
                    };
                    sa.lock().unwrap_or_else(|p| p.into_inner()).push(Sample {
                        at: t0.duration_since(started),
                        outcome,
                    });
                    let spent = t0.elapsed();
                    if spent < interval {
                        std::thread::sleep(interval - spent);
                    }
                }
                Ok(())
            });
        });
        Prober {
            stop,
            samples,
            started,
            thread: Some(thread),
        }
    }

    /// Time since the prober started (the time base of [`Sample::at`]).
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// A copy of the samples so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until a sample taken at or after `since` satisfies `pred`, or `timeout` passes.
    pub fn wait_for(
        &self,
        since: Duration,
        timeout: Duration,
        pred: impl Fn(&Outcome) -> bool,
    ) -> Option<Sample> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self
                .samples()
                .into_iter()
                .find(|s| s.at >= since && pred(&s.outcome))
            {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the prober and returns every sample.
    pub fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.samples()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Percentile (nearest-rank) of a set of durations; `None` when empty.
pub fn percentile(values: &[Duration], p: f64) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort();
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    Some(v[rank.min(v.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|x| Duration::from_millis(*x))
                .collect::<Vec<_>>()
        };
        let v = ms(&[50, 10, 40, 20, 30]);
        assert_eq!(percentile(&v, 50.0), Some(Duration::from_millis(30)));
        assert_eq!(percentile(&v, 95.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 0.0), Some(Duration::from_millis(10)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn http_get_rejects_non_200_and_garbage() {
        use std::net::TcpListener;
        for reply in [
            "HTTP/1.1 503 Service Unavailable\r\n\r\nnope",
            "garbage without headers",
        ] {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let reply = reply.to_string();
            let t = std::thread::spawn(move || {
                let (mut s, _) = l.accept().unwrap();
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf);
                s.write_all(reply.as_bytes()).unwrap();
            });
            assert!(http_get(addr, Duration::from_secs(2)).is_err());
            t.join().unwrap();
        }
    }
}
