#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rtap_host::fuzz::exchange_wire(data));
