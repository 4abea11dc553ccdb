//! zeronas end-to-end harness.
//!
//! The e2e suite runs a real kube-apiserver, etcd and kube-controller-manager on loopback,
//! and a test-only node agent that runs the project's pods as local processes on 127.0.0.x
//! addresses. This crate starts with the pod-IP allocator of that agent.

pub mod pod_ips;
