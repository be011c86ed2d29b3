#![no_main]
//! Any bytes as a signup form body: a 4xx or a 303, never a 5xx or a panic.

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let request = Request::post("/signup")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "same-origin")
        .body(Body::from(data.to_vec()))
        .unwrap();
    enlist_fuzz::must_not_fail(request);
});
