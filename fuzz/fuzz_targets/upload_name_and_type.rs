#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cloudhelp_fuzz::upload_name_and_type(data));
