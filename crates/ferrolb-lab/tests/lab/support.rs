//! What every test of the embedded API server starts from: a server on a free loopback
//! port and a client built as the components build theirs, from its kubeconfig.

use ferrolb_lab::apiserver::{ApiServer, RunningServer};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// The client configuration of `server`'s (admin) kubeconfig.
async fn config(server: &RunningServer) -> Config {
    // kube's rustls feature set enables two crypto providers; pick one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = Kubeconfig::from_yaml(&server.kubeconfig_yaml()).expect("kubeconfig parses");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is usable");
    assert_eq!(config.default_namespace, "default");
    config
}

/// A client of `server` from its (admin) kubeconfig.
pub async fn client(server: &RunningServer) -> Client {
    Client::try_from(config(server).await).expect("client")
}

/// The same without kube's own retries, to see an answer the client would retry.
pub async fn client_without_retries(server: &RunningServer) -> Client {
    let mut config = config(server).await;
    config.default_retry = false;
    Client::try_from(config).expect("client")
}

/// `builder` started on a free loopback port, and an admin client of it.
pub async fn start_with(builder: ApiServer) -> (RunningServer, Client) {
    let server = builder
        .start_at("127.0.0.1:0".parse().unwrap())
        .await
        .expect("server starts");
    let c = client(&server).await;
    (server, c)
}

/// A default server on a free loopback port, and an admin client of it.
pub async fn start() -> (RunningServer, Client) {
    let server = ApiServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .expect("server starts");
    let c = client(&server).await;
    (server, c)
}
