//! One conformance suite for both kv backends: the embedded [`MemoryKv`] and [`RedisKv`] (a
//! private `redis-server` per test). A component cannot tell them apart through
//! [`KvStore`]: each case below runs against both. The store-wide quotas of the embedded
//! store (keys and bytes) have no Redis counterpart; they are tested beside it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use llmchat_host::kv::{KvError, KvStore, MAX_KEY_LEN, MemoryKv, RedisKv};
use llmchat_host::manifest::RedisSettings;
use llmchat_host::redis::RedisPool;

use crate::support::redis::RedisServer;

/// The largest value both stores accept here.
const MAX_VALUE: usize = 4096;

/// A backend under test, with the Redis server it needs (if any) kept alive.
struct Subject {
    kv: Arc<dyn KvStore>,
    _redis: Option<RedisServer>,
}

impl std::ops::Deref for Subject {
    type Target = dyn KvStore;
    fn deref(&self) -> &Self::Target {
        &*self.kv
    }
}

impl Subject {
    /// Waits until `key` of `namespace` is gone, at most 10 s; returns when it was first seen
    /// gone, measured from `since`.
    async fn expired(&self, namespace: &str, key: &str, since: Instant) -> Duration {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let gone = !self.exists(namespace, key).await.expect("exists");
            if gone {
                assert_eq!(self.get(namespace, key).await.expect("get"), None);
                return since.elapsed();
            }
            assert!(Instant::now() < deadline, "`{key}` never expired");
            llmchat_host::timers::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn memory() -> Subject {
    Subject {
        kv: Arc::new(MemoryKv::new(10_000, 16 << 20, MAX_VALUE)),
        _redis: None,
    }
}

fn redis() -> Subject {
    let server = RedisServer::start();
    let pool = Arc::new(RedisPool::new(&RedisSettings::default(), &server.url()).expect("pool"));
    Subject {
        kv: Arc::new(RedisKv::new(pool, MAX_VALUE)),
        _redis: Some(server),
    }
}

fn is_invalid<T: std::fmt::Debug>(result: Result<T, KvError>) -> bool {
    matches!(result, Err(KvError::Invalid(_)))
}

/// Declares `name` once per backend: `name::memory` and `name::redis`.
macro_rules! conformance {
    ($($name:ident($kv:ident) $body:block)*) => {$(
        mod $name {
            use super::*;
            async fn case($kv: Subject) $body
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() { case(super::memory()).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() { case(super::redis()).await }
        }
    )*};
}

conformance! {
    set_get_exists_and_delete_round_trip(kv) {
        assert_eq!(kv.get("app", "k").await.unwrap(), None);
        assert!(!kv.exists("app", "k").await.unwrap());
        kv.set("app", "k", b"one".to_vec(), None).await.unwrap();
        assert_eq!(kv.get("app", "k").await.unwrap(), Some(b"one".to_vec()));
        assert!(kv.exists("app", "k").await.unwrap());
        kv.set("app", "k", b"two".to_vec(), None).await.unwrap();
        assert_eq!(kv.get("app", "k").await.unwrap(), Some(b"two".to_vec()), "set replaces");
        assert!(kv.delete("app", "k").await.unwrap(), "it existed");
        assert!(!kv.delete("app", "k").await.unwrap(), "already gone");
        assert!(!kv.exists("app", "k").await.unwrap());
        assert_eq!(kv.get("app", "k").await.unwrap(), None);
    }

    values_are_arbitrary_bytes_and_keys_arbitrary_text(kv) {
        let every_byte: Vec<u8> = (0..=255).collect();
        let values = [
            vec![],
            vec![0],
            every_byte,
            b"\xff\xfe not utf-8 \x00\r\n".to_vec(),
            vec![0xab; MAX_VALUE],
        ];
        for (i, value) in values.iter().enumerate() {
            let key = format!("v{i}");
            kv.set("app", &key, value.clone(), None).await.unwrap();
            assert_eq!(kv.get("app", &key).await.unwrap().as_ref(), Some(value), "value {i}");
        }
        let keys = ["a:b", "{app}:x", "with space", "line\nbreak", "ünïcödé ✓", "*", &"k".repeat(MAX_KEY_LEN)];
        for (i, key) in keys.iter().enumerate() {
            kv.set("app", key, vec![i as u8], None).await.unwrap();
        }
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(kv.get("app", key).await.unwrap(), Some(vec![i as u8]), "key {key:?}");
        }
    }

    namespaces_are_isolated(kv) {
        kv.set("a", "k", b"a's".to_vec(), None).await.unwrap();
        kv.set("ab", "k", b"ab's".to_vec(), None).await.unwrap();
        assert_eq!(kv.get("b", "k").await.unwrap(), None);
        assert!(!kv.exists("b", "k").await.unwrap());
        assert!(!kv.delete("b", "k").await.unwrap());
        assert_eq!(kv.increment("b", "k", 5).await.unwrap(), 5, "b's own key, counted from 0");
        assert_eq!(kv.get("a", "k").await.unwrap(), Some(b"a's".to_vec()));
        assert_eq!(kv.get("ab", "k").await.unwrap(), Some(b"ab's".to_vec()));
        // A key that spells another namespace's key is still this namespace's.
        assert_eq!(kv.get("a", "b:k").await.unwrap(), None);
        assert!(kv.delete("a", "k").await.unwrap());
        assert_eq!(kv.get("ab", "k").await.unwrap(), Some(b"ab's".to_vec()));
        assert_eq!(kv.get("b", "k").await.unwrap(), Some(b"5".to_vec()));
    }

    increments_count_from_zero_and_store_decimal_text(kv) {
        assert_eq!(kv.increment("app", "n", 2).await.unwrap(), 2);
        assert_eq!(kv.increment("app", "n", -5).await.unwrap(), -3);
        assert_eq!(kv.increment("app", "n", 0).await.unwrap(), -3);
        assert_eq!(kv.get("app", "n").await.unwrap(), Some(b"-3".to_vec()));
        kv.set("app", "n", b"41".to_vec(), None).await.unwrap();
        assert_eq!(kv.increment("app", "n", 1).await.unwrap(), 42, "a set integer counts on");
        kv.set("app", "min", i64::MIN.to_string().into_bytes(), None).await.unwrap();
        assert_eq!(kv.increment("app", "min", 0).await.unwrap(), i64::MIN);
    }

    increments_refuse_what_is_not_a_decimal_integer_and_overflow(kv) {
        // Only the text an increment itself would store: no sign, space, leading zero or
        // exponent.
        for text in ["", "text", "1.5", " 5", "5 ", "+5", "007", "-0", "1e3", "\u{0}"] {
            kv.set("app", "s", text.as_bytes().to_vec(), None).await.unwrap();
            assert!(is_invalid(kv.increment("app", "s", 1).await), "{text:?}");
            assert_eq!(kv.get("app", "s").await.unwrap(), Some(text.as_bytes().to_vec()), "unchanged");
        }
        kv.set("app", "big", i64::MAX.to_string().into_bytes(), None).await.unwrap();
        assert!(is_invalid(kv.increment("app", "big", 1).await), "overflow");
        kv.set("app", "small", i64::MIN.to_string().into_bytes(), None).await.unwrap();
        assert!(is_invalid(kv.increment("app", "small", -1).await), "underflow");
        assert_eq!(kv.get("app", "big").await.unwrap(), Some(i64::MAX.to_string().into_bytes()));
    }

    concurrent_increments_are_never_lost(kv) {
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let kv = kv.kv.clone();
                tokio::spawn(async move {
                    for _ in 0..50 {
                        kv.increment("app", "hits", 1).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(kv.get("app", "hits").await.unwrap(), Some(b"400".to_vec()));
    }

    keys_expire_after_their_ttl_and_not_before(kv) {
        let ttl = Duration::from_millis(300);
        let since = Instant::now();
        kv.set("app", "k", b"v".to_vec(), Some(ttl)).await.unwrap();
        kv.set("app", "kept", b"v".to_vec(), None).await.unwrap();
        let gone_after = kv.expired("app", "k", since).await;
        assert!(gone_after >= ttl, "expired after {gone_after:?}, before its {ttl:?}");
        assert!(!kv.delete("app", "k").await.unwrap(), "an expired key does not exist");
        assert!(kv.exists("app", "kept").await.unwrap(), "no TTL: kept");
        // A zero TTL is accepted, and the key is soon gone.
        kv.set("app", "zero", b"v".to_vec(), Some(Duration::ZERO)).await.unwrap();
        kv.expired("app", "zero", Instant::now()).await;
        // A TTL longer than any store lives is accepted too.
        kv.set("app", "forever", b"v".to_vec(), Some(Duration::from_millis(u64::MAX))).await.unwrap();
        assert_eq!(kv.get("app", "forever").await.unwrap(), Some(b"v".to_vec()));
    }

    a_set_replaces_the_ttl_and_an_increment_keeps_it(kv) {
        let ttl = Duration::from_millis(200);
        kv.set("app", "made-permanent", b"1".to_vec(), Some(ttl)).await.unwrap();
        kv.set("app", "made-permanent", b"2".to_vec(), None).await.unwrap();
        kv.set("app", "counter", b"1".to_vec(), Some(ttl)).await.unwrap();
        assert_eq!(kv.increment("app", "counter", 1).await.unwrap(), 2);
        kv.expired("app", "counter", Instant::now()).await;
        assert_eq!(kv.get("app", "made-permanent").await.unwrap(), Some(b"2".to_vec()));
        // An expired counter starts again from zero, with no TTL.
        assert_eq!(kv.increment("app", "counter", 1).await.unwrap(), 1);
        kv.set("app", "probe", vec![], Some(ttl)).await.unwrap();
        kv.expired("app", "probe", Instant::now()).await;
        assert!(kv.exists("app", "counter").await.unwrap());
    }

    bad_keys_are_invalid_in_every_call(kv) {
        for key in [String::new(), "k".repeat(MAX_KEY_LEN + 1)] {
            assert!(is_invalid(kv.get("app", &key).await), "get {}", key.len());
            assert!(is_invalid(kv.set("app", &key, vec![], None).await), "set {}", key.len());
            assert!(is_invalid(kv.delete("app", &key).await), "delete {}", key.len());
            assert!(is_invalid(kv.exists("app", &key).await), "exists {}", key.len());
            assert!(is_invalid(kv.increment("app", &key, 1).await), "increment {}", key.len());
        }
        // The limit counts bytes, not characters.
        let wide = "é".repeat(MAX_KEY_LEN / 2 + 1);
        assert!(is_invalid(kv.set("app", &wide, vec![], None).await));
    }

    a_value_over_the_limit_is_invalid_and_changes_nothing(kv) {
        kv.set("app", "k", b"old".to_vec(), None).await.unwrap();
        let err = kv.set("app", "k", vec![0; MAX_VALUE + 1], None).await.unwrap_err();
        assert!(matches!(&err, KvError::Invalid(m) if m.contains(&MAX_VALUE.to_string())), "{err}");
        assert_eq!(kv.get("app", "k").await.unwrap(), Some(b"old".to_vec()));
        assert!(is_invalid(kv.set("app", "new", vec![0; MAX_VALUE + 1], None).await));
        assert!(!kv.exists("app", "new").await.unwrap());
    }
}
