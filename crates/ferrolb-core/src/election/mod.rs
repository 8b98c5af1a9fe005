//! Eligibility and owner election for announced IPs — the pure core of the speaker.
//!
//! Nothing here performs I/O: the speaker shell converts Kubernetes objects into
//! [`NodeInfo`] / [`ServiceView`] values, calls [`elect_all`], and executes the
//! [`ClaimAction`]s returned by [`decide_claim`] under the timings of a [`LeaseClock`].
//!
//! # Eligibility (MetalLB reference §4.8)
//!
//! Service level, in this order (first failure wins, reason in brackets):
//! 1. all ingress IPs inside one configured pool [`ipNotInPool`];
//! 2. at least one serving endpoint anywhere — `conditions.ready` nil/true or
//!    `conditions.serving` true [`noServingEndpoints`];
//! 3. the ads for the Service: ads covering the pool (by name, by pool label, or all pools
//!    when both lists are empty), filtered **only** by `serviceSelectors`; none
//!    [`noMatchingAdvertisement`];
//! 4. a Service with a sharing key and any of those ads having `serviceSelectors` is not
//!    announced [`sharedIPWithServiceSelector`].
//!
//! Node level: selected by the `nodeSelectors` of one of those ads
//! [`noMatchingAdvertisement`]; speaker alive [`speakerNotAlive`]; no
//! `NetworkUnavailable=True` [`networkUnavailable`]; no
//! `node.kubernetes.io/exclude-from-external-load-balancers` label unless
//! `--ignore-exclude-lb` [`excludedFromLoadBalancers`]; for `externalTrafficPolicy: Local`
//! hosts a serving endpoint [`noLocalEndpoint`]. No eligible node [`noEligibleNode`].
//! Cordoned nodes stay eligible (as MetalLB ≥ 0.15).
//!
//! Interfaces on a node: the union of the `interfaces` of the ads that select the node;
//! an ad without `interfaces` means all interfaces. Interfaces never influence election.
//!
//! Preferred-node score of a node: the sum, over the ads for the Service whose
//! `nodeSelectors` admit the node, of the weights of its matching
//! `preferredNodeSelectors` (an ad that does not apply to the Service, or does not select
//! the node, contributes nothing).
//!
//! # Election — per IP, not per Service
//!
//! * **One owner per IP.** All Services carrying an IP are answered by the same node.
//! * **Candidates of a shared IP.** Each announceable Service sharing the IP has its own
//!   eligible set. The IP's candidates are the nodes eligible for the *largest number* of
//!   those Services: their intersection when it is non-empty, otherwise the nodes serving
//!   the most Services. Services whose eligible set does not contain the elected owner are
//!   reported [`sharedIPOwnerNotEligible`] for that IP (their traffic would be dropped by
//!   kube-proxy on the owner anyway). Scores use the union of the sharers' ads
//!   (deduplicated by name), which equals each sharer's ads in every valid MetalLB setup.
//! * **Ranking (MetalLB's choice).** Score descending, then `SHA-256(node + "#" + anchor)`
//!   ascending bytewise, then node name. The *anchor* is the IP string MetalLB would hash:
//!   the IP itself when it is the first ingress IP of any Service carrying it (every
//!   single-IP Service), otherwise the first ingress IP of the first such Service by key.
//!   So the second IP of a dual-stack Service hashes its first IP, exactly like MetalLB,
//!   which announces all IPs of a Service from the winner of the first. A cluster
//!   migrating from MetalLB therefore starts with the owners MetalLB had (every
//!   vector of reference §4.2 holds), except for IPs that MetalLB itself announced
//!   from two nodes (a shared IP whose Services had different candidate sets).
//! * **Sticky.** [`elect`] keeps the current owner (from the IP's owner record) while it is
//!   among the IP's candidates, i.e. alive and eligible. A node that joins or returns —
//!   even one with a higher preference score — does not take IPs away. When the owner
//!   leaves or becomes ineligible the best-ranked candidate takes over; a failed owner's
//!   IPs therefore spread over the survivors by hash. `--revertive` restores MetalLB's
//!   behaviour (always the best-ranked candidate). Trade-off: after a node returns it owns
//!   nothing until the next failover (or `--revertive`).
//! * **Determinism.** [`elect_all`] depends only on its inputs, not their order. Duplicated
//!   Service keys are never announced ([`duplicateService`]); a duplicated node name is
//!   treated as an unknown node.
//!
//! # Liveness, fencing and claims (speaker Lease per node)
//!
//! Times are measured on each node's own monotonic clock; see [`LeaseClock`]
//! (defaults: lease 2 s, renew deadline 1.2 s, renew every 300 ms — [`DEFAULT_LEASE_DURATION`],
//! [`DEFAULT_RENEW_DEADLINE`], [`DEFAULT_RETRY_PERIOD`]).
//! * **Renew.** A speaker renews its own Lease every `retry_period`; steady-state API
//!   writes are one renewal per node per interval, independent of IPs and Services.
//! * **Fencing.** It may announce only while `now − start of the last successful renewal <
//!   renew_deadline` ([`LeaseClock::may_announce`]). The start instant is when the request
//!   was *sent*, which precedes the server's commit, so the bound is conservative.
//! * **Peer liveness.** A peer is alive while `now − (when this node last saw its Lease
//!   change) < lease_duration` ([`LeaseClock::peer_alive`]); a released (empty holder) or
//!   missing Lease means gone at once. Because the observer saw the change no earlier than
//!   the holder sent it, and `renew_deadline + 250 ms ≤ lease_duration`, a holder that
//!   cannot renew has stopped announcing at least 250 ms before any peer considers it
//!   dead — a partitioned owner stops answering before its successor starts.
//! * **Owner records.** Each IP has a record `{holder, epoch}` written only when the owner
//!   changes, always with optimistic concurrency (create-if-absent, or update carrying the
//!   resourceVersion that was read), so of two concurrent claims exactly one succeeds; the
//!   loser re-reads and re-evaluates. [`decide_claim`] gives each node's action:
//!   - fenced (`!may_announce`): do nothing, announce nothing;
//!   - holder and desired: announce;
//!   - holder but not desired: **withdraw first**, then hand the record to the desired
//!     node (`epoch + 1`) or delete it when nobody is desired (one write per change);
//!   - desired but not holder: claim (`epoch + 1`) if there is no record or its holder is
//!     gone, or alive but has not handed over within `handover_timeout` (= lease
//!     duration); otherwise wait. A claimant announces only once it reads itself as holder;
//!   - otherwise: idle. A node that reads a record naming someone else never announces,
//!     so a holder that was overruled withdraws as soon as it sees the new record.
//! * **Re-read after (re)acquisition.** [`Fence`] allows announcing from the cached view only
//!   while this node is permitted *and* it re-read (confirmed) the owner records after the
//!   permission was last (re)gained — at start-up, and after every loss of permission (a
//!   lapsed Lease, or a lost heartbeat quorum). A speaker in that state may hold a cache
//!   saying it owns IPs that were taken over meanwhile; without the re-read it would answer
//!   next to the new owner (the model check finds exactly this interleaving when the rule is
//!   removed). The speaker confirms each claim it would announce with a write carrying the
//!   version just read; a view naming it as holder of nothing needs no confirmation. Claim
//!   writes need none either: they are conditional on the version read.
//! * **Heartbeats.** [`membership`] combines these Lease rules with direct speaker
//!   heartbeats (sub-second failover, no withdrawal while the API server is down and every
//!   speaker up, majority rule on partitions, the API server as witness when a majority is
//!   lost); its [`membership::MeshRules::evaluate`] decides permission and peer liveness
//!   when heartbeats are enabled.
//! * **Restart.** A speaker that restarts within the lease duration finds itself holder of
//!   its records and announces again after its first renewal and the confirmation of its
//!   records.
//! * **Checked.** `crates/ferrolb-core/tests/core/election_lease.rs` explores every interleaving of crashes,
//!   restarts, partitions, heals, renewals, record reads, Lease expiries and claim
//!   decisions with *arbitrary, disagreeing* election views (3 nodes), each node gated by
//!   the speaker's own [`Fence`] with the speaker's confirmation rule, and asserts that an
//!   announcer is always the holder of the stored record, hence at most one announcer.
//!   The forced claim over a live but unresponsive holder is outside that guarantee: it
//!   relies on the holder seeing the new record, so the overlap is bounded by the holder's
//!   watch latency (it only happens when two live speakers disagree for a full lease
//!   duration).
//!
//! [`ipNotInPool`]: Reason::IpNotInPool
//! [`noServingEndpoints`]: Reason::NoServingEndpoints
//! [`noMatchingAdvertisement`]: Reason::NoMatchingAdvertisement
//! [`sharedIPWithServiceSelector`]: Reason::SharedIpWithServiceSelector
//! [`speakerNotAlive`]: Reason::SpeakerNotAlive
//! [`networkUnavailable`]: Reason::NetworkUnavailable
//! [`excludedFromLoadBalancers`]: Reason::ExcludedFromLoadBalancers
//! [`noLocalEndpoint`]: Reason::NoLocalEndpoint
//! [`noEligibleNode`]: Reason::NoEligibleNode
//! [`sharedIPOwnerNotEligible`]: Reason::SharedIpOwnerNotEligible
//! [`duplicateService`]: Reason::DuplicateService

mod elect;
mod eligibility;
mod incremental;
mod lease;
pub mod membership;
mod model;

pub use elect::{
    anchor_ip, elect, elect_all, election_hash, go_ip_string, rank_candidates, rank_cmp, Election,
    NameSet, Ownership,
};
pub use eligibility::{
    ad_covers_pool, ad_selects_node, ad_selects_service, ads_for_service, interfaces_for,
    node_candidacy, node_health, preferred_score, service_ads, service_candidates, Candidate,
    ElectionOptions, Interfaces, Reason, ServiceCandidates,
};
pub use incremental::{IncrementalElection, Owners, Scope, Views};
pub use lease::{
    decide_claim, ClaimAction, Fence, HolderState, LeaseClock, LeaseClockError, OwnerRecord,
    DEFAULT_LEASE_DURATION, DEFAULT_RENEW_DEADLINE, DEFAULT_RETRY_PERIOD, MAX_LEASE_DURATION,
    MIN_FENCE_MARGIN,
};
pub use model::{
    canonical_ip, conditions_serve, endpoint_can_serve, pool_for_ips, service_view, sharing_key,
    sharing_key_of, view_of, NodeInfo, ServiceFacts, ServiceView, ViewError, EXCLUDE_LB_LABEL,
    LEGACY_SHARED_IP_ANNOTATION, SERVICE_NAME_LABEL, SHARED_IP_ANNOTATION,
};
