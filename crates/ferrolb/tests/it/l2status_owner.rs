//! ServiceL2Status objects are owned by the announcing speaker's Pod (name and UID from
//! the downward API), so Kubernetes' garbage collector deletes them with the Pod.

use std::time::{Duration, Instant};

use ferrolb::crd::ServiceL2Status;
use ferrolb_lab::harness::{speaker_pod_name, Lab};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use crate::e2e::{dump, index_of, quickstart_web, served, wait_takeover};

/// The ServiceL2Status objects of node `node` (by the `metallb.io/node` label).
fn statuses_of(lab: &Lab, node: &str) -> Vec<ServiceL2Status> {
    let client = lab.client();
    let sel = format!("metallb.io/node={node}");
    lab.block_on(async move {
        kube::Api::<ServiceL2Status>::namespaced(client, "metallb-system")
            .list(&kube::api::ListParams::default().labels(&sel))
            .await
            .map(|l| l.items)
    })
    .unwrap()
}

fn pod(lab: &Lab, name: &str) -> Pod {
    let client = lab.client();
    let name = name.to_string();
    lab.block_on(async move {
        kube::Api::<Pod>::namespaced(client, "metallb-system")
            .get(&name)
            .await
    })
    .unwrap()
}

/// Waits until node `i` has one ServiceL2Status and returns its owner references.
fn owners_of(lab: &Lab, i: usize) -> Vec<OwnerReference> {
    let node = format!("node-{}", i + 1);
    let t = Instant::now();
    loop {
        let objs = statuses_of(lab, &node);
        if objs.len() == 1 {
            return objs[0]
                .metadata
                .owner_references
                .clone()
                .unwrap_or_default();
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{node} has {} ServiceL2Status objects{}",
            objs.len(),
            dump(lab)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The owner is the Pod object of the node's speaker, the one the API server has (so a
/// garbage collector deleting that Pod deletes the object); after a failover the new
/// owner's object is owned by the new node's Pod.
#[test]
fn service_l2_status_is_owned_by_the_announcing_speaker_pod() {
    let Some((_g, mut lab)) = crate::e2e::lab("l2status_owner", 2) else {
        return;
    };
    let ip = quickstart_web(&mut lab);
    let owner = served(&lab, ip, Duration::from_secs(15));
    let i = index_of(&owner);
    let expect = |lab: &Lab, i: usize| {
        let p = pod(lab, &speaker_pod_name(i));
        let uid = p.metadata.uid.clone().unwrap();
        assert_eq!(Some(uid.as_str()), lab.speaker_pod_uid(i));
        vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: speaker_pod_name(i),
            uid,
            ..Default::default()
        }]
    };
    assert_eq!(owners_of(&lab, i), expect(&lab, i));

    // Crash the owner: the other node takes over and writes its own, owned object.
    let t = lab.signal_speaker(i, libc::SIGKILL).unwrap();
    let new_owner = wait_takeover(
        &lab,
        ip,
        &owner,
        t,
        Duration::from_secs(10),
        Duration::from_millis(50),
        "killing the owner",
    );
    let j = index_of(&new_owner);
    assert_eq!(owners_of(&lab, j), expect(&lab, j));
    let _ = &mut lab;
}
