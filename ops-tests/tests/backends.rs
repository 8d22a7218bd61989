//! Every registered backend (`runtime::backends::REGISTRY`) against the scalar reference,
//! one proptest per op kind: a new backend is covered by registering it, a new op by adding
//! it to the graph (its case generator is then required to compile). Backends this CPU
//! cannot run are reported as skipped. Run with `--release`.

ops_tests::op_suite!(registered, ops_tests::registered_candidates());
