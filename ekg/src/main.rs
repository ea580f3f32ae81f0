//! ekg binary.

fn main() {}
