//! Network-namespace test networks: a bridge as switch, hosts on veth pairs, cleaned up on drop. (placeholder)
