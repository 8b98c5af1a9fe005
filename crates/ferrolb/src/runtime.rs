//! Process plumbing shared by `ferrolb controller` and `ferrolb speaker`: the kube client
//! builder, the duration syntax of every flag, the shutdown-signal waiter, and the
//! allocator's settings.

use std::time::Duration;

/// Installs the rustls crypto provider (ring) once per process. Real kube clients
/// panic without one when several providers are compiled in.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Builds a kube client from `--kubeconfig` (one or several files joined with `:`, merged
/// in order as kubectl does), else in-cluster configuration, else `~/.kube/config`.
pub async fn make_client(kubeconfig: Option<&str>) -> anyhow::Result<kube::Client> {
    install_crypto_provider();
    let config = match kubeconfig.filter(|k| !k.trim().is_empty()) {
        Some(paths) => {
            let mut merged: Option<kube::config::Kubeconfig> = None;
            for p in paths.split(':').filter(|p| !p.is_empty()) {
                let kc = kube::config::Kubeconfig::read_from(p)
                    .map_err(|e| anyhow::anyhow!("cannot read kubeconfig {p}: {e}"))?;
                merged = Some(match merged {
                    None => kc,
                    Some(m) => m.merge(kc)?,
                });
            }
            let kc = merged.ok_or_else(|| anyhow::anyhow!("--kubeconfig is empty"))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| anyhow::anyhow!("invalid kubeconfig {paths}: {e}"))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot find the API server (no in-cluster config, no ~/.kube/config): {e}"
            )
        })?,
    };
    client_of(config)
}

/// The size of every API connection's read buffer.
///
/// hyper's default buffer grows while reads fill it, up to ~400 KiB, and a pooled connection
/// keeps what it grew to after a large LIST. A watch event or a page of a list is read in
/// several reads of this size instead. Measured at 10 000 Services: ≈ 1.5 MiB less live heap
/// (heaptrack), no measurable change in the resident heap at rest.
pub const API_READ_BUFFER: usize = 16 << 10;

/// kube's client stack (`kube::Client::try_from`: HTTPS with the config's TLS settings and
/// timeouts, the base URI, retries of 5xx and 429 answers, authentication, extra headers)
/// over a hyper client whose connections read with a fixed buffer of [`API_READ_BUFFER`].
/// A config that needs what only kube's own builder handles (a proxy; an exec credential,
/// whose client certificate expires) gets kube's builder unchanged.
pub fn client_of(config: kube::Config) -> anyhow::Result<kube::Client> {
    use kube::client::ConfigExt;
    use tower::ServiceBuilder;

    if config.proxy_url.is_some() || config.auth_info.exec.is_some() {
        return Ok(kube::Client::try_from(config)?);
    }
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    let https = config.rustls_https_connector_with_connector(http)?;
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    let http_client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http1_read_buf_exact_size(API_READ_BUFFER)
            .build(connector);
    let retry = config
        .default_retry
        .then(|| tower::retry::RetryLayer::new(kube::client::retry::RetryPolicy::server_retry()));
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(retry)
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(http_client);
    Ok(kube::Client::new(service, config.default_namespace))
}

/// Parses a flag duration: `250ms`, `1.5s`, `2m`, or a bare number of seconds; between
/// 1 ms and 24 h.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 300ms, 1.5s, 2m"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        _ => return Err(format!("invalid duration unit in {s:?}: use ms, s or m")),
    };
    if !secs.is_finite() || !(0.001..=86_400.0).contains(&secs) {
        return Err(format!("duration {s:?} must be between 1ms and 24h"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Writes a duration the way [`parse_duration`] reads it: whole seconds as `2s`, anything
/// else in milliseconds (`1200ms`). Flag defaults are printed with it, so `--help`, the
/// parsed value and the constant they come from agree.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// `default_value` of a duration flag, from its constant (clap wants a `'static` string).
pub fn flag_default(cell: &'static std::sync::OnceLock<String>, d: Duration) -> &'static str {
    cell.get_or_init(|| format_duration(d)).as_str()
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The backoff of every watch: kube's default (800 ms doubling to 30 s, jittered, started
/// over after two quiet minutes), reset lazily.
pub fn watch_backoff() -> LazyReset<kube::runtime::watcher::DefaultBackoff> {
    LazyReset::new(kube::runtime::watcher::DefaultBackoff::default())
}

/// A backoff whose reset waits for the next delay asked of it. kube's watch streams reset
/// their backoff at every event and at every poll that finds none; resetting kube's default
/// backoff builds it anew, which a speaker at rest on a 100-node cluster did more than a
/// hundred times a second for the peers' Lease renewals alone. The delays are the same:
/// the inner backoff is reset once, before the first delay after any number of resets.
#[derive(Debug)]
pub struct LazyReset<B> {
    inner: B,
    reset_due: bool,
}

impl<B> LazyReset<B> {
    /// `inner`, as it is.
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            reset_due: false,
        }
    }
}

impl<B: kube::runtime::utils::Backoff> Iterator for LazyReset<B> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if std::mem::take(&mut self.reset_due) {
            self.inner.reset();
        }
        self.inner.next()
    }
}

impl<B: kube::runtime::utils::Backoff> kube::runtime::utils::Backoff for LazyReset<B> {
    fn reset(&mut self) {
        self.reset_due = true;
    }
}

/// jemalloc's settings for the `ferrolb` binary (the C string jemalloc reads at its start;
/// the binary's `malloc_conf` says why each).
pub const MALLOC_CONF: &[u8] = b"narenas:1,tcache:false,dirty_decay_ms:0,muzzy_decay_ms:0\0";

#[cfg(test)]
mod tests {
    use super::*;

    /// A backoff counting its resets, giving 1, 2, 3, … seconds since the last one.
    #[derive(Default)]
    struct Counting {
        resets: u32,
        step: u64,
    }

    impl Iterator for Counting {
        type Item = Duration;
        fn next(&mut self) -> Option<Duration> {
            self.step += 1;
            Some(Duration::from_secs(self.step))
        }
    }

    impl kube::runtime::utils::Backoff for Counting {
        fn reset(&mut self) {
            self.resets += 1;
            self.step = 0;
        }
    }

    #[test]
    fn a_lazy_reset_gives_the_delays_of_an_eager_one_and_resets_once_per_delay() {
        use kube::runtime::utils::Backoff;
        // r: reset, n: next delay — as a watch stream calls them
        let calls = "nnrrrrnnrnrrrrrrrrnnnrr";
        let mut eager = Counting::default();
        let mut lazy = LazyReset::new(Counting::default());
        for c in calls.chars() {
            match c {
                'r' => {
                    eager.reset();
                    lazy.reset();
                }
                _ => assert_eq!(lazy.next(), eager.next(), "after {calls:?}"),
            }
        }
        assert_eq!(eager.resets, 15);
        assert_eq!(
            lazy.inner.resets, 3,
            "once before each delay that follows resets"
        );
        // a reset still pending when nothing more is asked costs nothing
        assert!(lazy.reset_due);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration(" 3 "), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1ms"), Ok(Duration::from_millis(1)));
        for bad in [
            "", "ms", "1h", "-1s", "1..2s", "abc", "0s", "0", "0.1ms", "25h", "1441m", "inf",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formatted_durations_parse_back() {
        for (d, s) in [
            (Duration::from_secs(2), "2s"),
            (Duration::from_millis(1200), "1200ms"),
            (Duration::from_millis(300), "300ms"),
            (Duration::from_secs(60), "60s"),
        ] {
            assert_eq!(format_duration(d), s);
            assert_eq!(parse_duration(s), Ok(d));
        }
    }

    #[tokio::test]
    async fn kubeconfigs_joined_with_colons_are_merged_first_wins() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, ctx: &str, server: &str| {
            let p = dir.path().join(name);
            std::fs::write(
                &p,
                format!(
                    "apiVersion: v1\nkind: Config\ncurrent-context: {ctx}\n\
                     clusters:\n- name: {ctx}\n  cluster:\n    server: {server}\n\
                     contexts:\n- name: {ctx}\n  context:\n    cluster: {ctx}\n    user: {ctx}\n\
                     users:\n- name: {ctx}\n  user:\n    token: t\n"
                ),
            )
            .unwrap();
            p.display().to_string()
        };
        let a = write("a", "first", "https://192.0.2.1:6443");
        let b = write("b", "second", "https://192.0.2.2:6443");
        let client = make_client(Some(&format!("{a}:{b}"))).await.unwrap();
        assert_eq!(client.default_namespace(), "default");
        // the merged file's current context is the first file's (kubectl's rule)
        let cfg = kube::config::Kubeconfig::read_from(&a)
            .unwrap()
            .merge(kube::config::Kubeconfig::read_from(&b).unwrap())
            .unwrap();
        assert_eq!(cfg.current_context.as_deref(), Some("first"));
        assert_eq!(cfg.clusters.len(), 2);
        assert!(make_client(Some("/nonexistent/kubeconfig")).await.is_err());
    }
}
