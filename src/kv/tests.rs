use super::*;
use proptest::prelude::*;
use std::collections::HashMap;

fn put(key: &str, value: &[u8]) -> KvCommand {
    put_if(key, value, Condition::default())
}

fn put_if(key: &str, value: &[u8], condition: Condition) -> KvCommand {
    KvCommand::Put {
        key: key.to_owned(),
        value: value.to_vec(),
        condition,
    }
}

fn del(key: &str) -> KvCommand {
    del_if(key, Condition::default())
}

fn del_if(key: &str, condition: Condition) -> KvCommand {
    KvCommand::Delete {
        key: key.to_owned(),
        condition,
    }
}

fn if_rev(rev: u64) -> Condition {
    Condition {
        if_mod_revision: Some(rev),
        ..Condition::default()
    }
}

fn ok_revision(result: &KvResult) -> u64 {
    match result {
        KvResult::Ok { revision, .. } => *revision,
        KvResult::Failed(e) => panic!("expected success, got {e}"),
    }
}

fn failed(result: KvResult) -> KvError {
    match result {
        KvResult::Failed(e) => e,
        ok => panic!("expected failure, got {ok:?}"),
    }
}

fn bincode_roundtrip(store: &KvStore) -> KvStore {
    let config = bincode::config::standard();
    let bytes = bincode::serde::encode_to_vec(store, config).expect("encode");
    let (back, read) =
        bincode::serde::decode_from_slice::<KvStore, _>(&bytes, config).expect("decode");
    assert_eq!(read, bytes.len());
    back
}

/// A copy of the store (what the snapshot builder takes under the state machine's lock)
/// shares the values instead of copying them, and a later write to the original leaves
/// the copy as it was.
#[test]
fn a_copy_of_the_store_shares_values_and_is_isolated_from_later_writes() {
    let mut kv = KvStore::default();
    for i in 0..100 {
        kv.apply(
            &put(&format!("k/{i:03}"), &vec![i as u8; 64 * 1024]),
            Epoch(0),
        );
    }
    let copy = kv.clone();
    for i in 0..100 {
        let key = format!("k/{i:03}");
        let (a, b) = (kv.get(&key).unwrap(), copy.get(&key).unwrap());
        assert!(
            std::ptr::eq(a.value.as_ptr(), b.value.as_ptr()),
            "{key}: the copy duplicated the value"
        );
    }
    kv.apply(&put("k/000", b"new"), Epoch(0));
    kv.apply(&del("k/001"), Epoch(0));
    assert_eq!(copy.get("k/000").unwrap().value, vec![0u8; 64 * 1024]);
    assert!(copy.get("k/001").is_some());
    assert_eq!(copy.len(), 100);
    assert_eq!(kv.get("k/000").unwrap().value, b"new");
}

#[test]
fn put_sets_create_and_mod_revisions_like_etcd() {
    let mut kv = KvStore::default();
    assert_eq!(kv.revision(), 0);
    let r1 = kv.apply(&put("a", b"1"), Epoch(0));
    assert_eq!(
        r1,
        KvResult::Ok {
            key: "a".into(),
            revision: 1,
            prev: None
        }
    );
    assert_eq!(ok_revision(&kv.apply(&put("b", b"x"), Epoch(0))), 2);
    let r3 = kv.apply(&put("a", b"2"), Epoch(0));
    let KvResult::Ok {
        revision: 3,
        prev: Some(prev),
        ..
    } = r3
    else {
        panic!("unexpected {r3:?}");
    };
    assert_eq!(prev.value, b"1");
    assert_eq!(
        (prev.create_revision, prev.mod_revision, prev.version),
        (1, 1, 1)
    );
    let a = kv.get("a").expect("a exists");
    assert_eq!(a.value, b"2");
    assert_eq!((a.create_revision, a.mod_revision, a.version), (1, 3, 2));
    assert_eq!(kv.revision(), 3);
    assert_eq!(kv.len(), 2);
}

#[test]
fn delete_removes_and_recreate_starts_a_new_life() {
    let mut kv = KvStore::default();
    kv.apply(&put("a", b"1"), Epoch(0));
    kv.apply(&put("a", b"2"), Epoch(0));
    let r = kv.apply(&del("a"), Epoch(0));
    let KvResult::Ok {
        revision: 3,
        prev: Some(prev),
        key,
    } = r
    else {
        panic!("unexpected {r:?}");
    };
    assert_eq!(key, "a");
    assert_eq!(prev.value, b"2");
    assert!(kv.get("a").is_none());
    assert!(kv.is_empty());
    assert_eq!(ok_revision(&kv.apply(&put("a", b"3"), Epoch(0))), 4);
    let a = kv.get("a").expect("a exists");
    assert_eq!((a.create_revision, a.mod_revision, a.version), (4, 4, 1));
}

#[test]
fn delete_of_missing_key_fails_without_consuming_a_revision() {
    let mut kv = KvStore::default();
    kv.apply(&put("a", b"1"), Epoch(0));
    let before = kv.clone();
    assert_eq!(
        failed(kv.apply(&del("nope"), Epoch(0))),
        KvError::NotFound { key: "nope".into() }
    );
    assert_eq!(kv, before);
    assert_eq!(kv.revision(), 1);
}

#[test]
fn cas_on_mod_revision_succeeds_only_on_the_current_revision() {
    let mut kv = KvStore::default();
    kv.apply(&put("k", b"v1"), Epoch(0));
    kv.apply(&put("other", b"x"), Epoch(0));
    assert_eq!(
        ok_revision(&kv.apply(&put_if("k", b"v2", if_rev(1)), Epoch(0))),
        3
    );
    // A second writer that read revision 1 loses and learns the current revision.
    let before = kv.clone();
    let err = failed(kv.apply(&put_if("k", b"v3", if_rev(1)), Epoch(0)));
    assert_eq!(
        err,
        KvError::CasConflict {
            key: "k".into(),
            expected: CasExpectation::ModRevision(1),
            actual_mod_revision: 3
        }
    );
    assert_eq!(kv, before);
    assert_eq!(kv.get("k").map(|e| e.value.clone()), Some(b"v2".to_vec()));
    // Delete is guarded the same way.
    assert!(!kv.apply(&del_if("k", if_rev(2)), Epoch(0)).is_ok());
    assert!(kv.apply(&del_if("k", if_rev(3)), Epoch(0)).is_ok());
    assert!(kv.get("k").is_none());
}

#[test]
fn if_revision_zero_means_create_only() {
    let mut kv = KvStore::default();
    assert_eq!(
        ok_revision(&kv.apply(&put_if("lock", b"me", if_rev(0)), Epoch(0))),
        1
    );
    let err = failed(kv.apply(&put_if("lock", b"you", if_rev(0)), Epoch(0)));
    assert_eq!(
        err,
        KvError::CasConflict {
            key: "lock".into(),
            expected: CasExpectation::ModRevision(0),
            actual_mod_revision: 1
        }
    );
    assert_eq!(
        kv.get("lock").map(|e| e.value.clone()),
        Some(b"me".to_vec())
    );
    // A non-zero expectation on a missing key reports revision 0 (absent).
    let err = failed(kv.apply(&put_if("free", b"x", if_rev(7)), Epoch(0)));
    assert!(matches!(
        err,
        KvError::CasConflict {
            actual_mod_revision: 0,
            ..
        }
    ));
    // "Delete if absent" holds, and then there is nothing to delete.
    assert!(matches!(
        failed(kv.apply(&del_if("free", if_rev(0)), Epoch(0))),
        KvError::NotFound { .. }
    ));
}

#[test]
fn cas_on_value() {
    let mut kv = KvStore::default();
    let cond = |v: &[u8]| Condition {
        if_value: Some(v.to_vec()),
        ..Condition::default()
    };
    // Missing key never matches, not even an empty value.
    assert!(matches!(
        failed(kv.apply(&put_if("k", b"a", cond(b"")), Epoch(0))),
        KvError::CasConflict {
            expected: CasExpectation::Value,
            actual_mod_revision: 0,
            ..
        }
    ));
    kv.apply(&put("k", b"a"), Epoch(0));
    assert!(kv.apply(&put_if("k", b"b", cond(b"a")), Epoch(0)).is_ok());
    assert!(matches!(
        failed(kv.apply(&put_if("k", b"c", cond(b"a")), Epoch(0))),
        KvError::CasConflict {
            actual_mod_revision: 2,
            ..
        }
    ));
    assert_eq!(kv.get("k").map(|e| e.value.clone()), Some(b"b".to_vec()));
    // Both conditions must hold.
    let both = Condition {
        if_mod_revision: Some(2),
        if_value: Some(b"nope".to_vec()),
        if_epoch: None,
    };
    assert!(!kv.apply(&put_if("k", b"d", both), Epoch(0)).is_ok());
}

#[test]
fn if_epoch_fences_stale_writers() {
    let mut kv = KvStore::default();
    let at = |e: Epoch| Condition {
        if_epoch: Some(e),
        ..Condition::default()
    };
    assert!(kv.apply(&put_if("k", b"a", at(Epoch(5))), Epoch(5)).is_ok());
    let err = failed(kv.apply(&put_if("k", b"b", at(Epoch(5))), Epoch(6)));
    assert_eq!(
        err,
        KvError::EpochMismatch {
            expected: Epoch(5),
            actual: Epoch(6)
        }
    );
    assert_eq!(
        failed(kv.apply(&del_if("k", at(Epoch(4))), Epoch(6))),
        KvError::EpochMismatch {
            expected: Epoch(4),
            actual: Epoch(6)
        }
    );
    assert_eq!(kv.get("k").map(|e| e.value.clone()), Some(b"a".to_vec()));
    assert_eq!(kv.revision(), 1);
    // The epoch is reported even when the CAS would also fail.
    let both = Condition {
        if_mod_revision: Some(99),
        if_value: None,
        if_epoch: Some(Epoch(1)),
    };
    assert!(matches!(
        failed(kv.apply(&put_if("k", b"c", both), Epoch(6))),
        KvError::EpochMismatch { .. }
    ));
    assert!(kv.apply(&del_if("k", at(Epoch(6))), Epoch(6)).is_ok());
}

#[test]
fn key_length_limit_is_inclusive() {
    let mut kv = KvStore::default();
    let longest = "k".repeat(MAX_KEY_BYTES_CEILING);
    assert!(kv.apply(&put(&longest, b""), Epoch(0)).is_ok());
    let too_long = "k".repeat(MAX_KEY_BYTES_CEILING + 1);
    assert_eq!(
        failed(kv.apply(&put(&too_long, b""), Epoch(0))),
        KvError::KeyTooLong {
            len: MAX_KEY_BYTES_CEILING + 1,
            limit: MAX_KEY_BYTES_CEILING
        }
    );
    // Multi-byte characters count in bytes: 513 two-byte chars = 1026 bytes.
    assert!(matches!(
        failed(kv.apply(&put(&"é".repeat(513), b""), Epoch(0))),
        KvError::KeyTooLong { len: 1026, .. }
    ));
    assert!(matches!(
        failed(kv.apply(&del(&too_long), Epoch(0))),
        KvError::KeyTooLong { .. }
    ));
    assert_eq!(kv.revision(), 1);
}

#[test]
fn value_limit_is_inclusive_and_configurable() {
    let limits = KvLimits {
        max_value_bytes: 16,
        ..KvLimits::default()
    };
    let mut kv = KvStore::with_limits(limits).expect("valid limits");
    assert!(kv.apply(&put("k", &[7; 16]), Epoch(0)).is_ok());
    assert_eq!(
        failed(kv.apply(&put("k", &[7; 17]), Epoch(0))),
        KvError::ValueTooLarge {
            what: ValueKind::Value,
            size: 17,
            limit: 16
        }
    );
    let big_compare = Condition {
        if_value: Some(vec![0; 17]),
        ..Condition::default()
    };
    assert!(matches!(
        failed(kv.apply(&put_if("k", b"", big_compare), Epoch(0))),
        KvError::ValueTooLarge {
            what: ValueKind::ComparedValue,
            ..
        }
    ));
    // The default is 1 MiB.
    let mut kv = KvStore::default();
    assert!(kv
        .apply(&put("big", &vec![1; DEFAULT_MAX_VALUE_BYTES]), Epoch(0))
        .is_ok());
    assert!(!kv
        .apply(&put("big", &vec![1; DEFAULT_MAX_VALUE_BYTES + 1]), Epoch(0))
        .is_ok());
}

#[test]
fn bad_keys_are_rejected_and_good_ones_accepted() {
    let bad = [
        ("", BadKeyReason::Empty),
        ("a\0b", BadKeyReason::ControlCharacter),
        ("a\nb", BadKeyReason::ControlCharacter),
        ("tab\t", BadKeyReason::ControlCharacter),
        ("\u{7f}", BadKeyReason::ControlCharacter),
        ("/a", BadKeyReason::LeadingSlash),
        ("/", BadKeyReason::LeadingSlash),
        ("a//b", BadKeyReason::EmptySegment),
        ("a/", BadKeyReason::EmptySegment),
        (".", BadKeyReason::DotSegment),
        ("..", BadKeyReason::DotSegment),
        ("a/../b", BadKeyReason::DotSegment),
        ("./a", BadKeyReason::DotSegment),
        ("a/.", BadKeyReason::DotSegment),
    ];
    let mut kv = KvStore::default();
    for (key, reason) in bad {
        let err = failed(kv.apply(&put(key, b"v"), Epoch(0)));
        assert_eq!(
            err,
            KvError::BadKey {
                key: key.to_owned(),
                reason
            },
            "key {key:?}"
        );
    }
    assert_eq!(kv.revision(), 0);
    for key in [
        "a",
        "a/b/c",
        "a.b",
        "..a",
        "a..",
        "ünï/ключ",
        "with space",
        "x?y#z%20",
    ] {
        assert!(kv.apply(&put(key, b"v"), Epoch(0)).is_ok(), "key {key:?}");
    }
}

#[test]
fn max_keys_bounds_new_keys_only() {
    let limits = KvLimits {
        max_keys: 2,
        ..KvLimits::default()
    };
    let mut kv = KvStore::with_limits(limits).expect("valid limits");
    kv.apply(&put("a", b"1"), Epoch(0));
    kv.apply(&put("b", b"1"), Epoch(0));
    assert_eq!(
        failed(kv.apply(&put("c", b"1"), Epoch(0))),
        KvError::TooManyKeys { limit: 2 }
    );
    assert!(
        kv.apply(&put("a", b"2"), Epoch(0)).is_ok(),
        "updating an existing key is allowed"
    );
    kv.apply(&del("b"), Epoch(0));
    assert!(kv.apply(&put("c", b"1"), Epoch(0)).is_ok());
    assert_eq!(kv.len(), 2);
}

#[test]
fn limits_are_validated_and_lowering_keeps_data() {
    for bad in [
        KvLimits {
            max_key_bytes: 0,
            ..KvLimits::default()
        },
        KvLimits {
            max_key_bytes: MAX_KEY_BYTES_CEILING + 1,
            ..KvLimits::default()
        },
        KvLimits {
            max_value_bytes: MAX_VALUE_BYTES_CEILING + 1,
            ..KvLimits::default()
        },
        KvLimits {
            max_keys: 0,
            ..KvLimits::default()
        },
    ] {
        assert!(matches!(
            KvStore::with_limits(bad),
            Err(KvError::InvalidLimits { .. })
        ));
        let mut kv = KvStore::default();
        assert!(kv.set_limits(bad).is_err());
        assert_eq!(kv.limits(), KvLimits::default());
    }
    let mut kv = KvStore::default();
    kv.apply(&put("k", &[0; 100]), Epoch(0));
    let lower = KvLimits {
        max_value_bytes: 10,
        ..KvLimits::default()
    };
    kv.set_limits(lower).expect("valid limits");
    assert_eq!(kv.limits(), lower);
    assert_eq!(kv.get("k").map(|e| e.value.len()), Some(100));
    assert!(!kv.apply(&put("k", &[0; 11]), Epoch(0)).is_ok());
    assert_eq!(kv.revision(), 1, "set_limits does not consume a revision");
    // Limits travel in snapshots.
    assert_eq!(bincode_roundtrip(&kv).limits(), lower);
}

#[test]
fn list_paginates_within_a_prefix() {
    let mut kv = KvStore::default();
    for key in ["a", "a/1", "a/2", "a/3", "a/4", "a/5", "a0", "b/1", "0"] {
        kv.apply(&put(key, key.as_bytes()), Epoch(0));
    }
    fn keys<'a>(page: &ListPage<'a>) -> Vec<&'a str> {
        page.0.iter().map(|(k, _)| k.as_str()).collect()
    }
    let p1 = kv.list("a/", None, 2);
    assert_eq!((keys(&p1), p1.1), (vec!["a/1", "a/2"], true));
    let p2 = kv.list("a/", Some("a/2"), 2);
    assert_eq!((keys(&p2), p2.1), (vec!["a/3", "a/4"], true));
    let p3 = kv.list("a/", Some("a/4"), 2);
    assert_eq!((keys(&p3), p3.1), (vec!["a/5"], false));
    // An exact page reports no more.
    let exact = kv.list("a/", Some("a/3"), 2);
    assert_eq!((keys(&exact), exact.1), (vec!["a/4", "a/5"], false));
    // start_after before the prefix starts at the prefix; past it yields nothing.
    assert_eq!(
        keys(&kv.list("a/", Some("0"), 10)),
        vec!["a/1", "a/2", "a/3", "a/4", "a/5"]
    );
    assert_eq!(kv.list("a/", Some("zzz"), 10), (vec![], false));
    // Empty prefix lists everything in key order; values come along.
    let all = kv.list("", None, 100);
    assert_eq!(all.0.len(), 9);
    assert_eq!(all.0[0].0, "0");
    assert_eq!(all.0[0].1.value, b"0");
    assert_eq!(kv.list("a", None, 100).0.len(), 7);
    assert_eq!(kv.list("c", None, 100), (vec![], false));
    // limit 0 answers only whether something matches.
    assert_eq!(kv.list("a/", None, 0), (vec![], true));
    assert_eq!(kv.list("c/", None, 0), (vec![], false));
}

#[test]
fn list_page_is_capped() {
    let mut kv = KvStore::default();
    for i in 0..MAX_LIST_PAGE + 5 {
        kv.apply(&put(&format!("k/{i:05}"), b""), Epoch(0));
    }
    let (page, more) = kv.list("k/", None, usize::MAX);
    assert_eq!(page.len(), MAX_LIST_PAGE);
    assert!(more);
    let last = page[page.len() - 1].0.clone();
    let (rest, more) = kv.list("k/", Some(&last), usize::MAX);
    assert_eq!(rest.len(), 5);
    assert!(!more);
}

#[test]
fn changed_since_follows_puts_and_deletes() {
    let mut kv = KvStore::default();
    assert!(!kv.changed_since("k", 0), "never existed");
    kv.apply(&put("k", b"1"), Epoch(0)); // rev 1
    assert!(kv.changed_since("k", 0));
    assert!(!kv.changed_since("k", 1));
    kv.apply(&put("other", b"1"), Epoch(0)); // rev 2
    assert!(
        !kv.changed_since("k", 1),
        "other keys do not wake this watch"
    );
    kv.apply(&del("k"), Epoch(0)); // rev 3
    assert!(kv.changed_since("k", 1), "a delete wakes the watcher");
    assert!(!kv.changed_since("k", 3));
    kv.apply(&put("k", b"2"), Epoch(0)); // rev 4
    assert!(kv.changed_since("k", 3));
    assert!(!kv.changed_since("k", 4));
}

#[test]
fn tombstones_are_bounded_and_old_watchers_wake_spuriously_not_never() {
    let mut kv = KvStore::default();
    kv.apply(&put("first", b""), Epoch(0)); // rev 1
    kv.apply(&del("first"), Epoch(0)); // rev 2
    for i in 0..MAX_TOMBSTONES {
        let key = format!("t/{i}");
        kv.apply(&put(&key, b""), Epoch(0));
        kv.apply(&del(&key), Epoch(0));
    }
    assert_eq!(kv.tombstones.len(), MAX_TOMBSTONES);
    assert_eq!(kv.tombstones_by_revision.len(), MAX_TOMBSTONES);
    assert!(
        !kv.tombstones.contains_key("first"),
        "oldest tombstone dropped"
    );
    assert_eq!(kv.tombstone_floor, 2);
    // A watcher from before the dropped delete is woken; one from after it is not.
    assert!(kv.changed_since("first", 1));
    assert!(!kv.changed_since("first", 2));
    assert!(
        kv.changed_since("never", 0),
        "cannot tell: wake rather than miss"
    );
    assert!(!kv.changed_since("never", kv.revision()));
    assert_eq!(kv.approx_bytes(), kv.recompute_approx_bytes());
    assert_eq!(bincode_roundtrip(&kv), kv);
}

fn small_total(limit: u64) -> KvStore {
    KvStore::with_limits(KvLimits {
        max_total_bytes: limit,
        ..KvLimits::default()
    })
    .unwrap()
}

#[test]
fn the_total_bytes_limit_refuses_growth_past_it_and_nothing_else() {
    // Room for two entries of key "k/N" (3 bytes) and a 100-byte value.
    let one = 3 + 100 + ENTRY_OVERHEAD_BYTES;
    let mut kv = small_total(2 * one);
    assert!(kv.apply(&put("k/1", &[1; 100]), Epoch(0)).is_ok());
    assert!(kv.apply(&put("k/2", &[2; 100]), Epoch(0)).is_ok());
    assert_eq!(kv.approx_bytes(), 2 * one);
    let before = kv.clone();
    let err = failed(kv.apply(&put("k/3", &[3; 1]), Epoch(0)));
    assert_eq!(
        err,
        KvError::StoreFull {
            total_bytes: 2 * one,
            after_bytes: 2 * one + 3 + 1 + ENTRY_OVERHEAD_BYTES,
            limit: 2 * one
        }
    );
    let msg = err.to_string();
    assert!(
        msg.contains("max_total_bytes") && msg.contains("delete keys"),
        "{msg}"
    );
    assert_eq!(
        kv, before,
        "a refused put changes nothing, revision included"
    );
    // Growing an existing value is refused too; keeping or shrinking it is not.
    assert!(matches!(
        failed(kv.apply(&put("k/1", &[1; 101]), Epoch(0))),
        KvError::StoreFull { .. }
    ));
    assert!(kv.apply(&put("k/1", &[9; 100]), Epoch(0)).is_ok());
    assert!(kv.apply(&put("k/1", &[9; 10]), Epoch(0)).is_ok());
    // Deleting frees room (a tombstone is smaller than the entry it replaces).
    assert!(kv.apply(&del("k/2"), Epoch(0)).is_ok());
    assert!(kv.apply(&put("k/3", &[3; 50]), Epoch(0)).is_ok());
    assert!(kv.approx_bytes() <= 2 * one);
    // The early check the HTTP layer runs gives the same answer as the apply.
    assert_eq!(
        kv.check_put_size("k/4", 1000).err(),
        Some(failed(kv.clone().apply(&put("k/4", &[0; 1000]), Epoch(0))))
    );
}

#[test]
fn a_store_left_above_a_lowered_total_limit_can_still_shrink() {
    let mut kv = KvStore::default();
    kv.apply(&put("a", &[0; 1000]), Epoch(0));
    kv.apply(&put("b", &[0; 1000]), Epoch(0));
    kv.set_limits(KvLimits {
        max_total_bytes: 100,
        ..KvLimits::default()
    })
    .unwrap();
    assert!(matches!(
        failed(kv.apply(&put("c", b"x"), Epoch(0))),
        KvError::StoreFull { .. }
    ));
    assert!(kv.apply(&put("a", b"small"), Epoch(0)).is_ok());
    assert!(kv.apply(&del("b"), Epoch(0)).is_ok());
}

#[test]
fn total_bytes_limit_is_bounded_by_its_ceiling() {
    for bad in [0, MAX_KV_TOTAL_BYTES + 1] {
        let limits = KvLimits {
            max_total_bytes: bad,
            ..KvLimits::default()
        };
        let err = limits.validate().unwrap_err().to_string();
        assert!(err.contains("max_total_bytes"), "{err}");
    }
    assert_eq!(KvLimits::default().max_total_bytes, MAX_KV_TOTAL_BYTES);
}

#[test]
fn approx_bytes_tracks_contents() {
    let mut kv = KvStore::default();
    assert_eq!(kv.approx_bytes(), 0);
    kv.apply(&put("ab", &[0; 10]), Epoch(0));
    assert_eq!(kv.approx_bytes(), 2 + 10 + ENTRY_OVERHEAD_BYTES);
    kv.apply(&put("ab", &[0; 4]), Epoch(0));
    assert_eq!(kv.approx_bytes(), 2 + 4 + ENTRY_OVERHEAD_BYTES);
    kv.apply(&del("ab"), Epoch(0));
    assert_eq!(kv.approx_bytes(), 2 + TOMBSTONE_OVERHEAD_BYTES);
    kv.apply(&put("ab", &[]), Epoch(0));
    assert_eq!(kv.approx_bytes(), 2 + ENTRY_OVERHEAD_BYTES);
}

#[test]
fn snapshot_roundtrips_in_bincode_and_json() {
    let mut kv = KvStore::default();
    kv.apply(&put("a", b"text"), Epoch(0));
    kv.apply(&put("b", &[0xff, 0, 1]), Epoch(0));
    kv.apply(&put("c", b""), Epoch(0));
    kv.apply(&del("c"), Epoch(0));
    let back = bincode_roundtrip(&kv);
    assert_eq!(back, kv);
    assert_eq!(back.approx_bytes(), kv.approx_bytes());
    assert!(back.changed_since("c", 3));
    let json = serde_json::to_string(&kv).expect("json");
    assert!(
        !json.contains("approx_bytes"),
        "derived fields are not serialized: {json}"
    );
    let back: KvStore = serde_json::from_str(&json).expect("json back");
    assert_eq!(back, kv);
}

#[test]
fn inconsistent_snapshots_are_refused() {
    let limits = r#""limits":{"max_key_bytes":1024,"max_value_bytes":1048576,"max_keys":1000000,"max_total_bytes":805306368}"#;
    let entry = |c: u64, m: u64, v: u64| {
        format!(r#"{{"value":[],"create_revision":{c},"mod_revision":{m},"version":{v}}}"#)
    };
    let store = |entries: String, revision: u64, tombstones: &str, floor: u64| {
        format!(
            r#"{{"entries":{{{entries}}},"revision":{revision},{limits},"tombstones":{{{tombstones}}},"tombstone_floor":{floor}}}"#
        )
    };
    let good = store(format!(r#""k":{}"#, entry(1, 2, 2)), 3, r#""gone":3"#, 0);
    assert!(serde_json::from_str::<KvStore>(&good).is_ok(), "{good}");
    let bad = [
        store(format!(r#""k":{}"#, entry(1, 5, 1)), 3, "", 0), // mod revision from the future
        store(format!(r#""k":{}"#, entry(2, 1, 1)), 3, "", 0), // created after modified
        store(format!(r#""k":{}"#, entry(0, 1, 1)), 3, "", 0), // never created
        store(format!(r#""k":{}"#, entry(1, 1, 0)), 3, "", 0), // version 0
        store(format!(r#""/k":{}"#, entry(1, 1, 1)), 3, "", 0), // bad key
        store(String::new(), 3, r#""a":2,"b":2"#, 0),          // duplicate tombstone revision
        store(format!(r#""k":{}"#, entry(1, 1, 1)), 3, r#""k":2"#, 0), // tombstone of a live key
        store(String::new(), 3, r#""a":4"#, 0),                // tombstone from the future
        store(String::new(), 3, "", 4),                        // floor from the future
        store(String::new(), 3, r#""a":2"#, 2),                // tombstone below the floor
    ];
    for json in bad {
        let err = serde_json::from_str::<KvStore>(&json).expect_err(&json);
        assert!(
            err.to_string().contains("kv snapshot is inconsistent"),
            "{err}"
        );
    }
    let bad_limits = good.replace(r#""max_keys":1000000"#, r#""max_keys":0"#);
    assert!(serde_json::from_str::<KvStore>(&bad_limits).is_err());
}

#[test]
fn exhausted_revision_fails_instead_of_wrapping() {
    let json = format!(
        r#"{{"entries":{{}},"revision":{},"limits":{{"max_key_bytes":1024,"max_value_bytes":1048576,"max_keys":1000000,"max_total_bytes":805306368}},"tombstones":{{}},"tombstone_floor":0}}"#,
        u64::MAX
    );
    let mut kv: KvStore = serde_json::from_str(&json).expect("valid store");
    let err = failed(kv.apply(&put("k", b""), Epoch(0)));
    assert_eq!(err, KvError::RevisionExhausted { revision: u64::MAX });
    assert!(kv.is_empty());
}

#[test]
fn apply_owned_matches_apply() {
    let cmds = [
        put("a", b"1"),
        put_if("a", b"2", if_rev(1)),
        put_if("a", b"3", if_rev(1)),
        del("a"),
        del("a"),
    ];
    let (mut x, mut y) = (KvStore::default(), KvStore::default());
    for cmd in cmds {
        assert_eq!(
            x.apply(&cmd, Epoch(0)),
            y.apply_owned(cmd.clone(), Epoch(0)),
            "{cmd:?}"
        );
    }
    assert_eq!(x, y);
}

#[test]
fn error_messages_name_the_thing_and_the_next_step() {
    let cas = KvError::CasConflict {
        key: "cfg/db".into(),
        expected: CasExpectation::ModRevision(4),
        actual_mod_revision: 9,
    }
    .to_string();
    assert!(
        cas.contains("\"cfg/db\"")
            && cas.contains("mod revision 4")
            && cas.contains("if_revision=9"),
        "{cas}"
    );
    let epoch = KvError::EpochMismatch {
        expected: Epoch(2),
        actual: Epoch(3),
    }
    .to_string();
    assert!(
        epoch.contains("if_epoch=2") && epoch.contains("fenced"),
        "{epoch}"
    );
    let big = KvError::ValueTooLarge {
        what: ValueKind::Value,
        size: 10,
        limit: 5,
    }
    .to_string();
    assert!(
        big.contains("max_value_bytes") && big.contains("10"),
        "{big}"
    );
    let bad = KvError::BadKey {
        key: "a//b".into(),
        reason: BadKeyReason::EmptySegment,
    }
    .to_string();
    assert!(
        bad.contains("\"a//b\"") && bad.contains("empty segment"),
        "{bad}"
    );
}

#[test]
fn values_encode_as_text_or_base64() {
    assert_eq!(
        encode_value_for_json(b"hello"),
        ("hello".to_owned(), ENCODING_UTF8)
    );
    assert_eq!(
        encode_value_for_json("ключ".as_bytes()),
        ("ключ".to_owned(), ENCODING_UTF8)
    );
    assert_eq!(encode_value_for_json(b""), (String::new(), ENCODING_UTF8));
    assert_eq!(
        encode_value_for_json(&[0xff, 0xfe, 0x00]),
        ("//4A".to_owned(), ENCODING_BASE64)
    );
    assert_eq!(
        encode_value_for_json(&[0x80]),
        ("gA==".to_owned(), ENCODING_BASE64)
    );
    assert_eq!(
        decode_value_from_json("gA==", ENCODING_BASE64),
        Ok(vec![0x80])
    );
    assert_eq!(
        decode_value_from_json("hi", ENCODING_UTF8),
        Ok(b"hi".to_vec())
    );
    assert!(matches!(
        decode_value_from_json("gA", ENCODING_BASE64),
        Err(ValueDecodeError::InvalidBase64(_))
    ));
    assert!(matches!(
        decode_value_from_json("g*==", ENCODING_BASE64),
        Err(ValueDecodeError::InvalidBase64(_))
    ));
    assert_eq!(
        decode_value_from_json("x", "hex"),
        Err(ValueDecodeError::UnknownEncoding("hex".into()))
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn value_encoding_roundtrips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let (text, encoding) = encode_value_for_json(&bytes);
        prop_assert_eq!(decode_value_from_json(&text, encoding), Ok(bytes));
    }

    #[test]
    fn list_pages_cover_exactly_the_prefix(
        keys in proptest::collection::btree_set("[ab]{1,2}(/[ab]{1,2}){0,2}", 0..40),
        prefix in "[ab/]{0,3}",
        page in 1usize..5,
    ) {
        let mut kv = KvStore::default();
        for key in &keys {
            prop_assert!(kv.apply(&put(key, b""), Epoch(0)).is_ok());
        }
        let expected: Vec<&String> = keys.iter().filter(|k| k.starts_with(&prefix)).collect();
        let mut seen: Vec<&String> = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..=keys.len() {
            let (entries, more) = kv.list(&prefix, after.as_deref(), page);
            prop_assert!(entries.len() <= page);
            seen.extend(entries.iter().map(|(k, _)| *k));
            after = entries.last().map(|(k, _)| (*k).clone());
            if !more {
                break;
            }
            prop_assert_eq!(entries.len(), page, "a page with more after it is full");
        }
        prop_assert_eq!(seen, expected);
    }
}

// ---- deterministic apply over arbitrary commands ----

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec!["a", "b", "a/b", "c"]).prop_map(str::to_owned),
        1 => "[ab/.\n]{0,4}",
        1 => Just("k".repeat(MAX_KEY_BYTES_CEILING + 1)),
    ]
}

fn arb_condition() -> impl Strategy<Value = Condition> {
    (
        prop::option::weighted(0.4, 0u64..6),
        prop::option::weighted(0.2, proptest::collection::vec(0u8..3, 0..3)),
        prop::option::weighted(0.2, 0u64..3),
    )
        .prop_map(|(if_mod_revision, if_value, if_epoch)| Condition {
            if_mod_revision,
            if_value,
            if_epoch: if_epoch.map(Epoch),
        })
}

fn arb_command() -> impl Strategy<Value = KvCommand> {
    prop_oneof![
        3 => (arb_key(), proptest::collection::vec(0u8..3, 0..12), arb_condition())
            .prop_map(|(key, value, condition)| KvCommand::Put { key, value, condition }),
        1 => (arb_key(), arb_condition()).prop_map(|(key, condition)| KvCommand::Delete { key, condition }),
    ]
}

fn small_limits() -> KvLimits {
    KvLimits {
        max_key_bytes: MAX_KEY_BYTES_CEILING,
        max_value_bytes: 8,
        max_keys: 3,
        max_total_bytes: MAX_KV_TOTAL_BYTES,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, max_shrink_iters: 500, ..ProptestConfig::default() })]

    #[test]
    fn apply_is_deterministic_and_revisions_count_successes(
        cmds in proptest::collection::vec((arb_command(), 0u64..3), 0..40)
    ) {
        let mut x = KvStore::with_limits(small_limits()).expect("valid limits");
        let mut y = x.clone();
        let mut successes = 0u64;
        for (i, (cmd, epoch)) in cmds.iter().enumerate() {
            if i == cmds.len() / 2 {
                // Replica y installs a snapshot midway; it must go on exactly like x.
                y = bincode_roundtrip(&y);
            }
            let before = x.clone();
            let rx = x.apply(cmd, Epoch(*epoch));
            let ry = y.apply(cmd, Epoch(*epoch));
            prop_assert_eq!(&rx, &ry);
            match &rx {
                KvResult::Ok { key, revision, .. } => {
                    successes += 1;
                    prop_assert_eq!(*revision, before.revision() + 1);
                    prop_assert_eq!(x.revision(), *revision);
                    prop_assert_eq!(key.as_str(), cmd.key());
                    prop_assert!(x.changed_since(key, before.revision()));
                }
                KvResult::Failed(_) => prop_assert_eq!(&x, &before, "a failed command changed the store"),
            }
            prop_assert_eq!(x.approx_bytes(), x.recompute_approx_bytes());
            prop_assert!(x.entries.values().all(|e| e.mod_revision <= x.revision()));
        }
        prop_assert_eq!(&x, &y);
        prop_assert_eq!(x.revision(), successes);
        prop_assert_eq!(&bincode_roundtrip(&x), &x);
        let json = serde_json::to_string(&x).expect("json");
        let back: KvStore = serde_json::from_str(&json).expect("json back");
        prop_assert_eq!(&back, &x);
    }
}

// ---- comparison against a simple model ----

#[derive(Clone, Debug, PartialEq)]
struct ModelEntry {
    value: Vec<u8>,
    create: u64,
    modified: u64,
    version: u64,
}

/// A deliberately naive restatement of the spec, on a HashMap.
#[derive(Default)]
struct Model {
    map: HashMap<String, ModelEntry>,
    revision: u64,
    /// Last revision at which each key was put or deleted, for watches.
    last_change: HashMap<String, u64>,
}

/// Which error, without its details (the model only predicts the kind).
#[derive(Debug, PartialEq)]
enum Outcome {
    Ok {
        revision: u64,
        prev: Option<ModelEntry>,
    },
    Epoch,
    Cas,
    TooLarge,
    NotFound,
    TooManyKeys,
}

impl Model {
    fn apply(&mut self, op: &Op, key: &str, epoch: Epoch) -> Outcome {
        let limits = small_limits();
        if let Op::Put { value, .. } = op {
            if value.len() > limits.max_value_bytes {
                return Outcome::TooLarge;
            }
        }
        let cond = op.condition(self, key);
        if cond.if_epoch.is_some_and(|e| e != epoch) {
            return Outcome::Epoch;
        }
        let current = self.map.get(key).cloned();
        let current_rev = current.as_ref().map(|e| e.modified).unwrap_or(0);
        if cond.if_mod_revision.is_some_and(|r| r != current_rev) {
            return Outcome::Cas;
        }
        if let Some(v) = &cond.if_value {
            if v.len() > limits.max_value_bytes {
                return Outcome::TooLarge;
            }
            if current.as_ref().map(|e| &e.value) != Some(v) {
                return Outcome::Cas;
            }
        }
        match op {
            Op::Put { value, .. } => {
                if current.is_none() && self.map.len() >= limits.max_keys {
                    return Outcome::TooManyKeys;
                }
                self.revision += 1;
                let entry = match &current {
                    Some(e) => ModelEntry {
                        value: value.clone(),
                        create: e.create,
                        modified: self.revision,
                        version: e.version + 1,
                    },
                    None => ModelEntry {
                        value: value.clone(),
                        create: self.revision,
                        modified: self.revision,
                        version: 1,
                    },
                };
                self.map.insert(key.to_owned(), entry);
            }
            Op::Delete { .. } => {
                if current.is_none() {
                    return Outcome::NotFound;
                }
                self.revision += 1;
                self.map.remove(key);
            }
        }
        self.last_change.insert(key.to_owned(), self.revision);
        Outcome::Ok {
            revision: self.revision,
            prev: current,
        }
    }
}

/// Conditions generated relative to the model's state, so CAS hits as often as it misses.
#[derive(Clone, Debug)]
enum RevGen {
    Zero,
    Current,
    Stale(u64),
}

#[derive(Clone, Debug)]
enum ValGen {
    Current,
    Other(Vec<u8>),
}

#[derive(Clone, Debug)]
struct CondGen {
    rev: Option<RevGen>,
    val: Option<ValGen>,
    epoch: Option<Epoch>,
}

#[derive(Clone, Debug)]
enum Op {
    Put {
        key: usize,
        value: Vec<u8>,
        cond: CondGen,
    },
    Delete {
        key: usize,
        cond: CondGen,
    },
}

const MODEL_KEYS: [&str; 5] = ["a", "b", "c", "d/1", "d/2"];

impl Op {
    fn key(&self) -> &'static str {
        match self {
            Op::Put { key, .. } | Op::Delete { key, .. } => MODEL_KEYS[*key],
        }
    }

    fn condition(&self, model: &Model, key: &str) -> Condition {
        let cond = match self {
            Op::Put { cond, .. } | Op::Delete { cond, .. } => cond,
        };
        let current = model.map.get(key);
        Condition {
            if_mod_revision: cond.rev.as_ref().map(|r| match r {
                RevGen::Zero => 0,
                RevGen::Current => current.map(|e| e.modified).unwrap_or(0),
                RevGen::Stale(n) => *n,
            }),
            if_value: cond.val.as_ref().map(|v| match v {
                ValGen::Current => current.map(|e| e.value.clone()).unwrap_or_default(),
                ValGen::Other(v) => v.clone(),
            }),
            if_epoch: cond.epoch,
        }
    }

    fn command(&self, model: &Model) -> KvCommand {
        let key = self.key().to_owned();
        let condition = self.condition(model, &key);
        match self {
            Op::Put { value, .. } => KvCommand::Put {
                key,
                value: value.clone(),
                condition,
            },
            Op::Delete { .. } => KvCommand::Delete { key, condition },
        }
    }
}

fn arb_cond_gen() -> impl Strategy<Value = CondGen> {
    let rev = prop_oneof![
        Just(RevGen::Zero),
        Just(RevGen::Current),
        (1u64..20).prop_map(RevGen::Stale)
    ];
    let val = prop_oneof![
        Just(ValGen::Current),
        proptest::collection::vec(0u8..2, 0..10).prop_map(ValGen::Other)
    ];
    (
        prop::option::weighted(0.4, rev),
        prop::option::weighted(0.2, val),
        prop::option::weighted(0.2, 0u64..3),
    )
        .prop_map(|(rev, val, epoch)| CondGen {
            rev,
            val,
            epoch: epoch.map(Epoch),
        })
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..MODEL_KEYS.len(), proptest::collection::vec(0u8..2, 0..10), arb_cond_gen())
            .prop_map(|(key, value, cond)| Op::Put { key, value, cond }),
        2 => (0..MODEL_KEYS.len(), arb_cond_gen()).prop_map(|(key, cond)| Op::Delete { key, cond }),
    ]
}

fn outcome_of(result: KvResult) -> Outcome {
    match result {
        KvResult::Ok { revision, prev, .. } => Outcome::Ok {
            revision,
            prev: prev.map(|e| ModelEntry {
                value: e.value,
                create: e.create_revision,
                modified: e.mod_revision,
                version: e.version,
            }),
        },
        KvResult::Failed(KvError::EpochMismatch { .. }) => Outcome::Epoch,
        KvResult::Failed(KvError::CasConflict { .. }) => Outcome::Cas,
        KvResult::Failed(KvError::ValueTooLarge { .. }) => Outcome::TooLarge,
        KvResult::Failed(KvError::NotFound { .. }) => Outcome::NotFound,
        KvResult::Failed(KvError::TooManyKeys { .. }) => Outcome::TooManyKeys,
        KvResult::Failed(other) => panic!("the model never produces {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, max_shrink_iters: 500, ..ProptestConfig::default() })]

    #[test]
    fn store_agrees_with_a_hashmap_model(
        ops in proptest::collection::vec((arb_op(), 0u64..3), 0..50)
    ) {
        let mut kv = KvStore::with_limits(small_limits()).expect("valid limits");
        let mut model = Model::default();
        for (op, epoch) in &ops {
            let watch_from = model.revision.saturating_sub(2);
            let cmd = op.command(&model);
            let expected = model.apply(op, op.key(), Epoch(*epoch));
            let actual = outcome_of(kv.apply(&cmd, Epoch(*epoch)));
            prop_assert_eq!(actual, expected, "command {:?}", cmd);
            prop_assert_eq!(kv.revision(), model.revision);
            prop_assert_eq!(kv.len(), model.map.len());
            for key in MODEL_KEYS {
                let got = kv.get(key).map(|e| ModelEntry {
                    value: e.value.clone(),
                    create: e.create_revision,
                    modified: e.mod_revision,
                    version: e.version,
                });
                prop_assert_eq!(got.as_ref(), model.map.get(key), "key {}", key);
                let changed = model.last_change.get(key).is_some_and(|&r| r > watch_from);
                prop_assert_eq!(kv.changed_since(key, watch_from), changed, "watch on {} from {}", key, watch_from);
            }
        }
        let (page, more) = kv.list("d/", None, MAX_LIST_PAGE);
        let mut model_d: Vec<&String> = model.map.keys().filter(|k| k.starts_with("d/")).collect();
        model_d.sort();
        prop_assert_eq!(page.into_iter().map(|(k, _)| k).collect::<Vec<_>>(), model_d);
        prop_assert!(!more);
    }
}
