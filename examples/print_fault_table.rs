//! Prints the fault-to-status table as the README shows it, rendered from the one mapping in
//! `src/status.rs` and `src/upstream/`: `cargo run --example print_fault_table`.

fn main() {
    print!("{}", datashare_gateway::fault_table::markdown());
}
