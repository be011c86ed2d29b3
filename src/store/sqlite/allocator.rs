//! SQLite's memory comes from the process's own allocator instead of the C library's `malloc`.
//!
//! Inside a group commit every statement keeps an in-memory journal of the pages it touches, in
//! chunks of about a kilobyte that are allocated and freed again at the statement's end: with
//! mail and webhooks on, a signup's statements touch a dozen pages. The C library's allocator
//! and SQLite's allocation statistics (one global mutex around each call) were together about
//! 5% of the process's CPU under W3, against the same small-block work the Rust side already
//! hands to its faster allocator.

use std::alloc::{Layout, alloc, dealloc, realloc};
use std::ffi::{c_int, c_void};
use std::ptr::null_mut;

use rusqlite::ffi;

/// Each block starts with its size, as SQLite's own wrapper around `malloc` does: SQLite asks for
/// a block's size, and `dealloc` needs it. Eight bytes also keeps the alignment SQLite needs.
const HEADER: usize = 8;

/// Routes SQLite's allocations to the global allocator and turns off its allocation statistics
/// (nothing here reads them). Returns SQLite's error code if it refused, which it does once it
/// has been initialized: the defaults then stay, and SQLite works as before.
///
/// # Safety
/// Call before anything in the process uses SQLite, while no other thread can: SQLite's
/// configuration is not thread-safe (the start of `main`).
pub unsafe fn use_global_allocator() -> Result<(), c_int> {
    let methods = ffi::sqlite3_mem_methods {
        xMalloc: Some(sqlite_malloc),
        xFree: Some(sqlite_free),
        xRealloc: Some(sqlite_realloc),
        xSize: Some(sqlite_size),
        xRoundup: Some(sqlite_roundup),
        xInit: Some(sqlite_init),
        xShutdown: Some(sqlite_shutdown),
        pAppData: null_mut(),
    };
    // SAFETY: the caller runs this before SQLite's initialization, on one thread. SQLite copies
    // the methods; the functions they name live as long as the process.
    unsafe {
        let code = ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as c_int);
        if code != ffi::SQLITE_OK {
            return Err(code);
        }
        match ffi::sqlite3_config(ffi::SQLITE_CONFIG_MALLOC, &raw const methods) {
            ffi::SQLITE_OK => Ok(()),
            code => Err(code),
        }
    }
}

fn layout(size: usize) -> Option<Layout> {
    Layout::from_size_align(size.checked_add(HEADER)?, HEADER).ok()
}

unsafe extern "C" fn sqlite_malloc(size: c_int) -> *mut c_void {
    let Some(layout) = usize::try_from(size).ok().and_then(layout) else { return null_mut() };
    // SAFETY: the layout is never zero-sized (it holds the header).
    unsafe {
        let block = alloc(layout);
        if block.is_null() {
            return null_mut();
        }
        block.cast::<usize>().write(layout.size() - HEADER);
        block.add(HEADER).cast()
    }
}

/// The block's start and the size it was allocated with.
///
/// # Safety
/// `p` came from `sqlite_malloc` or `sqlite_realloc` and was not freed.
unsafe fn block_of(p: *mut c_void) -> (*mut u8, Layout) {
    // SAFETY: the header lies just before `p`, written when the block was made, and its size
    // made a valid layout then.
    unsafe {
        let block = p.cast::<u8>().sub(HEADER);
        let size = block.cast::<usize>().read();
        (block, Layout::from_size_align_unchecked(size + HEADER, HEADER))
    }
}

unsafe extern "C" fn sqlite_free(p: *mut c_void) {
    if p.is_null() {
        return;
    }
    // SAFETY: SQLite frees only what its `xMalloc` or `xRealloc` gave it, once.
    unsafe {
        let (block, layout) = block_of(p);
        dealloc(block, layout);
    }
}

unsafe extern "C" fn sqlite_realloc(p: *mut c_void, size: c_int) -> *mut c_void {
    if p.is_null() {
        // SAFETY: as `malloc`.
        return unsafe { sqlite_malloc(size) };
    }
    let Some(new_layout) = usize::try_from(size).ok().and_then(layout) else {
        return null_mut();
    };
    // SAFETY: `p` is a live block of ours (SQLite's contract); the new size is valid for the
    // same alignment. On failure the old block is left as it was, as SQLite expects.
    unsafe {
        let (block, old_layout) = block_of(p);
        let moved = realloc(block, old_layout, new_layout.size());
        if moved.is_null() {
            return null_mut();
        }
        moved.cast::<usize>().write(new_layout.size() - HEADER);
        moved.add(HEADER).cast()
    }
}

unsafe extern "C" fn sqlite_size(p: *mut c_void) -> c_int {
    if p.is_null() {
        return 0;
    }
    // SAFETY: SQLite asks only about live blocks of ours.
    let (_, layout) = unsafe { block_of(p) };
    c_int::try_from(layout.size() - HEADER).unwrap_or(c_int::MAX)
}

unsafe extern "C" fn sqlite_roundup(size: c_int) -> c_int {
    size.saturating_add(7) & !7
}

unsafe extern "C" fn sqlite_init(_: *mut c_void) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn sqlite_shutdown(_: *mut c_void) {}
