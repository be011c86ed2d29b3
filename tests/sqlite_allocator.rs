//! SQLite on the process's allocator, as `main` sets it up. A test binary of its own: the
//! setting is for the whole process and must come before any other use of SQLite.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use rusqlite::{Connection, params};

/// Counts what is allocated, so the test can see SQLite's blocks arrive here.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn sqlite_works_on_the_global_allocator_and_the_setting_is_taken_only_first() {
    // SAFETY: the only test in this process, and nothing has used SQLite yet.
    unsafe { enlist::store::use_global_allocator() }.expect("SQLite takes the allocator");

    let dir = tempfile::tempdir().expect("a temporary directory");
    let c = Connection::open(dir.path().join("allocator.db")).expect("opening a database");
    c.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA temp_store = MEMORY;
         CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL);
         CREATE INDEX t_by_body ON t (body);",
    )
    .expect("a schema");

    // Blocks of many sizes, a statement journal for each savepoint, and one undone.
    c.execute_batch("BEGIN").expect("begin");
    for i in 0..5_000_i64 {
        c.execute_batch("SAVEPOINT one").expect("savepoint");
        let body = vec![(i % 251) as u8; (i as usize * 37) % 9_000 + 1];
        c.execute("INSERT INTO t (id, body) VALUES (?, ?)", params![i, body]).expect("insert");
        let undo = if i % 10 == 9 { "ROLLBACK TO one; RELEASE one" } else { "RELEASE one" };
        c.execute_batch(undo).expect("release");
    }
    c.execute_batch("COMMIT").expect("commit");

    let (rows, bytes): (i64, i64) = c
        .query_row("SELECT count(*), sum(length(body)) FROM t", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("counting");
    let expected_bytes: i64 =
        (0..5_000_i64).filter(|i| i % 10 != 9).map(|i| (i * 37) % 9_000 + 1).sum();
    assert_eq!((rows, bytes), (4_500, expected_bytes));

    // A value grown far past its first block (SQLite reallocates as it goes).
    let joined: String =
        c.query_row("SELECT group_concat(id, ',') FROM t", [], |r| r.get(0)).expect("joining");
    assert_eq!(joined.split(',').count(), 4_500);
    assert!(joined.starts_with("0,1,2,3,4,5,6,7,8,10,"));

    // One statement, a handful of allocations on the Rust side, thousands inside SQLite: a
    // sorter, a growing string, page buffers.
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let sorted: i64 = c
        .query_row(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50000)
             SELECT length(group_concat(hex(randomblob(40)), ',')) FROM
             (SELECT i FROM n ORDER BY hex(randomblob(8)))",
            [],
            |r| r.get(0),
        )
        .expect("sorting");
    assert_eq!(sorted, 50_000 * 81 - 1);
    let made = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert!(made > 1_000, "SQLite's allocations went elsewhere: {made} here");

    // Once SQLite is in use it keeps what it has, and says so instead of changing under it.
    assert!(unsafe { enlist::store::use_global_allocator() }.is_err());
}
