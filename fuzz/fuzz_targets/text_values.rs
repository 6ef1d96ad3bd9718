//! Arbitrary bytes as a PostgreSQL text-format value of one column kind (the first byte picks
//! it: below 128 a scalar, from 128 an array of that scalar), appended with `append_text`.
//! Parse errors are fine; a panic, or a builder left with the wrong number of rows, is a bug,
//! and so is a value whose canonical rendering does not read back as itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((&kind, value)) = data.split_first() {
        if let Err(violation) = inlet_postgres::fuzz_text_value(kind, value) {
            panic!("{violation}");
        }
    }
});
