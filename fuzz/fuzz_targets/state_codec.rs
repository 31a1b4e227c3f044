#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rtap_host::fuzz::state_codec(data));
