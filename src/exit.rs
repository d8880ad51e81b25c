//! The exit codes of every command, defined here only: 0 ran (or checked) and the SLA
//! passed; 1 an SLA objective or a regression failed; 2 bad input (scenario, SLA or
//! workload file, flags, result directories); 3 runtime failure (broker unreachable, a
//! stage crashed, a file could not be written).

/// Ran and every SLA objective passed.
pub const EXIT_PASS: u8 = 0;
/// Ran and an SLA objective failed (or a regression was found).
pub const EXIT_SLA_FAILED: u8 = 1;
/// Bad input: a scenario file, flags, an SLA or workload file, result directories.
pub const EXIT_BAD_INPUT: u8 = 2;
/// Runtime failure: broker unreachable, a stage crashed, a file could not be written.
pub const EXIT_RUNTIME: u8 = 3;
