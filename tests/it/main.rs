//! The integration tests, one module per behaviour, in one binary: each test binary links
//! tonic, three AWS SDKs, Cedar, sqlx and OpenTelemetry, and on two cores 36 of those links
//! took longer than the tests. The shared support (also used by the benches) and the fuzz
//! targets (also used by cargo-fuzz) stay where those find them.

#[path = "../fuzz_targets/mod.rs"]
mod fuzz_targets;
#[path = "../support/mod.rs"]
mod support;

mod accept_backoff;
mod accounts;
mod approvals;
mod approvals_bounds;
mod approvals_postgres;
mod approvals_review;
mod architecture;
mod associate;
mod audit_e2e;
mod audit_layers;
mod audit_ship;
mod audit_ship_bucket;
mod audit_verify;
mod check_config;
mod consumer_operations;
mod dev;
mod emulator_admin;
mod emulator_cloudtrail;
mod emulator_errors;
mod emulator_faults;
mod emulator_lifecycle;
mod emulator_operations;
mod emulator_sts;
mod fair_shares;
mod fault_mapping;
mod fuzz_replay;
mod hostile;
mod idle_connections;
mod in_flight_cap;
mod json_logs;
mod lean_build;
mod metrics;
mod model_conformance;
mod mtls;
mod no_secrets;
mod partition;
mod policy_cli;
mod policy_property;
mod policy_reload;
mod policy_rules;
mod policy_stack;
mod policy_unreadable_entry;
mod reconcile;
mod reconcile_delivery;
mod session_renewal;
mod shutdown;
mod streams;
mod sts_faults;
mod tracing_otlp;
