#![no_main]
//! Any bytes as a Cookie header, on a page and on a session form: never a 5xx or a panic.

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = Request::get("/").header("cookie", data).body(Body::empty()) {
        enlist_fuzz::must_not_fail(request);
    }
    if let Ok(request) = Request::post("/unregister")
        .header("cookie", data)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "same-origin")
        .body(Body::from("csrf_token=x"))
    {
        enlist_fuzz::must_not_fail(request);
    }
});
