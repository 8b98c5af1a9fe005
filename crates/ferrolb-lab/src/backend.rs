//! The lab's stand-in for a Service's pods: a tiny HTTP server on each node that answers
//! every request with the node's name, so the client can tell which node served it.

use std::net::SocketAddr;

use axum::routing::get;
use axum::Router;

/// Serves `GET /` (and any path) with `"<name>\n"` until the process is stopped.
pub async fn serve(name: String, listen: SocketAddr) -> anyhow::Result<()> {
    let body = format!("{name}\n");
    let app = Router::new().fallback(get(move || {
        let body = body.clone();
        async move { body }
    }));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("backend cannot listen on {listen}: {e}"))?;
    tracing::info!(%listen, %name, "lab backend serving");
    axum::serve(listener, app).await?;
    Ok(())
}

/// Extracts the node name from a backend response body.
pub fn node_from_body(body: &str) -> Option<&str> {
    let line = body.lines().next()?.trim();
    (!line.is_empty()).then_some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_node_name() {
        assert_eq!(node_from_body("node-2\n"), Some("node-2"));
        assert_eq!(node_from_body("\n"), None);
        assert_eq!(node_from_body(""), None);
    }

    // Two workers: the probe below is blocking and must not starve the server task.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_with_its_name() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let task = tokio::spawn(serve("node-7".into(), addr));
        let mut body = None;
        for _ in 0..50 {
            if let Ok(b) = crate::probe::http_get(addr, std::time::Duration::from_millis(200)) {
                body = Some(b);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(body.as_deref().and_then(node_from_body), Some("node-7"));
        task.abort();
    }
}
