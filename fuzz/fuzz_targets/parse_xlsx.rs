#![no_main]
//! Any bytes as a `xlsx` file: the parser returns a document with valid spans, or an error.

libfuzzer_sys::fuzz_target!(init: {
    // Parsers may catch a third-party panic and turn it into a per-document error (the PDF
    // parser does); libfuzzer-sys's hook would abort before that catch runs. Panics that escape
    // `parse` still abort: the target runs under catch_unwind and aborts on a panic.
    std::panic::set_hook(Box::new(|_| {}));
}, |data: &[u8]| {
    if let Ok(doc) = docent::parse::parse(data, None, "doc.xlsx") {
        doc.validate().expect("block spans must be valid");
    }
});
