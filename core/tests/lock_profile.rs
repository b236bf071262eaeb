//! The lock profile behind `offst-bench --lock-profile`: each hold of a shared value is
//! counted under the value's address while the profile is on, and nothing when it is off.
//! The profile is for the whole process, so this file holds one test.

use offst_core::metrics::{lock_profile_start, lock_profile_take};
use offst_core::sync::Shared;

#[tokio::test]
async fn holds_are_counted_by_value_while_the_profile_is_on() {
    let a = Shared::new(0u32);
    let b = Shared::new(0u32);
    let addr = |s: &Shared<u32>| s as *const Shared<u32> as usize;
    *a.lock() += 1; // off: not counted
    lock_profile_start();
    *a.lock() += 1;
    *a.lock_async().await += 1;
    *b.lock() += 1;
    let p = lock_profile_take();
    *a.lock() += 1; // off again
    assert_eq!(p.len(), 2);
    assert_eq!(p.get(&addr(&a)).map(|u| u.holds), Some(2));
    assert_eq!(p.get(&addr(&b)).map(|u| u.holds), Some(1));
    assert!(lock_profile_take().is_empty());
    assert_eq!(a.into_inner(), 4);
}
