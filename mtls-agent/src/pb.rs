//! Generated protobuf and gRPC types (prost + tonic), from `proto/`.
#![allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    dead_code,
    clippy::all,
    reason = "generated code"
)]

/// The SPIFFE Workload API (`workload.proto` has no package: `/SpiffeWorkloadAPI/...`).
pub mod workload {
    include!(concat!(env!("OUT_DIR"), "/_.rs"));
}

/// `google.rpc`.
pub mod google {
    pub mod rpc {
        include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
    }
}

/// The Envoy xDS subset SDS needs.
pub mod envoy {
    pub mod config {
        pub mod core {
            pub mod v3 {
                include!(concat!(env!("OUT_DIR"), "/envoy.config.core.v3.rs"));
            }
        }
    }
    pub mod service {
        pub mod discovery {
            pub mod v3 {
                include!(concat!(env!("OUT_DIR"), "/envoy.service.discovery.v3.rs"));
            }
        }
        pub mod secret {
            pub mod v3 {
                include!(concat!(env!("OUT_DIR"), "/envoy.service.secret.v3.rs"));
            }
        }
    }
    pub mod extensions {
        pub mod transport_sockets {
            pub mod tls {
                pub mod v3 {
                    include!(concat!(
                        env!("OUT_DIR"),
                        "/envoy.extensions.transport_sockets.tls.v3.rs"
                    ));
                }
            }
        }
    }
}
