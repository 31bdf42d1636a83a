//! The public conformance suite, run on both bundled stores.

mod memory {
    use portcullis::session::MemoryStore;

    portcullis::session::session_store_conformance!(|clock| async move {
        MemoryStore::with_clock(clock)
    });
}

mod file {
    use portcullis::session::FileStore;

    portcullis::session::session_store_conformance!(|clock| async move {
        let dir = tempfile::tempdir().unwrap().keep();
        FileStore::open_with_clock(dir, clock).unwrap()
    });
}

mod file_specific {
    use std::sync::Arc;

    use portcullis::core::{Clock, ManualClock, OpaqueToken, StoreErrorKind};
    use portcullis::session::testing::{T0, record};
    use portcullis::session::{FileStore, SessionStore};

    #[tokio::test]
    async fn survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let key = OpaqueToken::generate().unwrap().digest();
        let rec = record(Some("alice"), clock.now());
        {
            let store = FileStore::open_with_clock(dir.path(), clock.clone()).unwrap();
            let _ = store.create(&key, &rec, None).await.unwrap();
        }
        let reopened = FileStore::open_with_clock(dir.path(), clock.clone()).unwrap();
        assert_eq!(reopened.load(&key).await.unwrap(), Some(rec));
        assert_eq!(reopened.count_for_user("alice").await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_corrupt_file_is_an_error_for_that_session_only() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let store = FileStore::open_with_clock(dir.path(), clock.clone()).unwrap();
        let good = OpaqueToken::generate().unwrap().digest();
        let bad = OpaqueToken::generate().unwrap().digest();
        let _ = store
            .create(&good, &record(Some("alice"), clock.now()), None)
            .await
            .unwrap();
        let _ = store
            .create(&bad, &record(Some("alice"), clock.now()), None)
            .await
            .unwrap();
        std::fs::write(
            dir.path()
                .join("sessions")
                .join(format!("{}.json", bad.to_hex())),
            b"{not json",
        )
        .unwrap();
        assert_eq!(
            store.load(&bad).await.unwrap_err().kind(),
            StoreErrorKind::Corrupt
        );
        assert!(store.load(&good).await.unwrap().is_some());
        assert_eq!(
            store.count_for_user("alice").await.unwrap(),
            1,
            "listing skips the corrupt one"
        );
        assert!(
            store.delete(&bad).await.unwrap(),
            "a corrupt record can be deleted"
        );
    }

    #[tokio::test]
    async fn files_are_named_by_digest_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let store = FileStore::open_with_clock(dir.path(), clock.clone()).unwrap();
        let token = OpaqueToken::generate().unwrap();
        let _ = store
            .create(&token.digest(), &record(None, clock.now()), None)
            .await
            .unwrap();
        let names: Vec<String> = std::fs::read_dir(dir.path().join("sessions"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![format!("{}.json", token.digest().to_hex())]);
        let contents =
            std::fs::read_to_string(dir.path().join("sessions").join(&names[0])).unwrap();
        assert!(
            !contents.contains(&token.to_encoded()),
            "the id itself is never stored"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join("sessions").join(&names[0]))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}

mod memory_specific {
    use std::sync::Arc;
    use std::time::Duration;

    use portcullis::core::{Clock, ManualClock, OpaqueToken};
    use portcullis::session::testing::{T0, record};
    use portcullis::session::{MemoryStore, SessionStore};

    #[tokio::test]
    async fn purge_bounds_memory() {
        let clock = Arc::new(ManualClock::new(T0));
        let store =
            MemoryStore::with_clock_and_purge_interval(clock.clone(), Duration::from_secs(1));
        for _ in 0..1000 {
            let _ = store
                .create(
                    &OpaqueToken::generate().unwrap().digest(),
                    &record(Some("u"), clock.now()),
                    None,
                )
                .await
                .unwrap();
        }
        assert_eq!(store.len(), 1000);
        clock.advance(Duration::from_secs(601));
        // The incremental sweep runs during writes, one shard per interval.
        for _ in 0..40 {
            clock.advance(Duration::from_secs(2));
            let _ = store
                .create(
                    &OpaqueToken::generate().unwrap().digest(),
                    &record(None, clock.now()),
                    None,
                )
                .await
                .unwrap();
        }
        assert!(
            store.len() <= 40,
            "expired records swept: {} left",
            store.len()
        );
        clock.advance(Duration::from_secs(601));
        let held = store.len();
        assert_eq!(store.purge_expired(), held);
        assert!(store.is_empty());
        assert_eq!(store.count_for_user("u").await.unwrap(), 0);
    }
}
