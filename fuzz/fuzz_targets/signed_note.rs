#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cloudhelp_fuzz::signed_note(data));
