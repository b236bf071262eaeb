//! The load generator's statement profile (`offst-bench --sql-profile`): every statement of a
//! profiled connection is counted once with its time, also one that runs while another's rows
//! are read, and nothing is installed or recorded when the profile is off.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use offst_core::metrics::{sql_profile_reset, sql_profile_start, sql_profile_take};
use offst_core::wallet::profile_statements;
use rusqlite::Connection;

#[test]
fn each_statement_is_counted_once_with_its_time_and_nothing_when_off() {
    // Off: a connection opened now is not profiled, even after the profile starts.
    let mut before = Connection::open_in_memory().unwrap();
    profile_statements(&mut before).unwrap();
    sql_profile_start();
    let mut c = Connection::open_in_memory().unwrap();
    profile_statements(&mut c).unwrap();
    c.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
        .unwrap();
    // The set-up is left out.
    sql_profile_reset();
    before.execute_batch("CREATE TABLE u (k)").unwrap();
    let mut put = c.prepare("INSERT INTO t (k, v) VALUES (?1, ?2)").unwrap();
    for k in 0..10 {
        put.execute(rusqlite::params![k, vec![0u8; 100]]).unwrap();
    }
    // A statement run while another's rows are read: both counted, each once.
    let mut read = c.prepare("SELECT k FROM t ORDER BY k").unwrap();
    let mut rows = read.query([]).unwrap();
    while let Some(row) = rows.next().unwrap() {
        let k: i64 = row.get(0).unwrap();
        c.execute("UPDATE t SET v = x'00' WHERE k = ?1", [k])
            .unwrap();
    }
    drop(rows);
    let p = sql_profile_take();
    assert_eq!(p["INSERT INTO t (k, v) VALUES (?1, ?2)"].0, 10);
    assert_eq!(p["UPDATE t SET v = x'00' WHERE k = ?1"].0, 10);
    assert_eq!(p["SELECT k FROM t ORDER BY k"].0, 1);
    assert!(p.values().all(|(_, ns)| *ns > 0), "{p:?}");
    assert!(!p.keys().any(|k| k.contains("CREATE")), "{p:?}");
    // Taken: off again, and empty.
    c.execute("UPDATE t SET v = x'01' WHERE k = 1", []).unwrap();
    assert!(sql_profile_take().is_empty());
}
