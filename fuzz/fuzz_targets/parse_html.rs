#![no_main]
//! Any bytes as a `html` file: the parser returns a document with valid spans, or an error.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = docent::parse::parse(data, None, "doc.html") {
        doc.validate().expect("block spans must be valid");
    }
});
